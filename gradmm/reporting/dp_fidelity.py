"""The DP-fidelity table (scripts/dp_fidelity.py): how much of the matching signal survives the noise."""

from gradmm.reporting.classification import _markdown


def markdown(rows: list[dict]) -> str:
    """The table of `measure`'s rows, with a caption that says what each column is."""
    caption = ("DP fidelity: does the X-step still follow the class target under the DP noise? σ: the noise's "
               "per-coordinate std; whole SNR: ‖clean clipped target‖ / ‖noise‖ over the whole V×d (+V) "
               "gradient; label-row SNR: the same on row y (and bias entry y), the part the matched gradient "
               "reads most; X-step cos: cosine between ∂f/∂X under the noisy and under the clean clipped target "
               "at the same X (free positions), mean (min–max) over noise draws × batches; clip cos: the same "
               "between the clipped and the unclipped clean target (clipping alone). X: random = GRADMM's "
               "initial batch, lm = the LM's samples under the class instruction.")
    header = ["dataset", "class", "X", "ε", "σ", "whole SNR", "label-row SNR", "X-step cos", "clip cos"]
    body = [[r["dataset"], r["class"], r["x"], f"{r['epsilon']:g}", f"{r['sigma']:.3g}", f"{r['whole_snr']:.2g}",
             f"{r['label_row_snr']:.3g}", f"{r['cos_mean']:.3f} ({r['cos_min']:.3f}–{r['cos_max']:.3f})",
             f"{r['clip_cos']:.3f}"] for r in rows]
    return f"## DP fidelity\n\n{caption}\n\n{_markdown(header, body)}\n"
