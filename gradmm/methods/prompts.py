"""The label-conditioned instruction that LM-written baselines sample after and GRADMM decodes after.

Instruction text (user turn of the tokenizer's chat template; models without one get the plain text followed
by a blank line and "Review:" / "Tweet:" / "Text:", the domain's last word), with the task's {domain} and
{description} (data.domain, data.description; gradmm.core.data.default_wording: "movie review" / "tweet" and
"with {label} sentiment" for the sentiment datasets, "text" and 'in the category "{label}"' for others) and
{label} the class name:

    zero-shot:  "Write one short {domain} {description}. Reply with the {domain} only."
    few-shot:   "Here are some {domain}s {description}:\\n- {demo 1}\\n- {demo 2}\\n...\\n\\n" followed by
                "Write one new short {domain} {description}. Reply with the {domain} only."

The authors' decoding prefixes ("You are now a movie critic ...", utilities.py:297-341) are tuned for Phi-1.5,
a base model; SmolLM2 is an instruct model, so we ask it directly through its chat template.
"""

import random
import re

from gradmm.core.data import Example


def instruction(task, label: int, demos: list[Example] = ()) -> str:
    """The user message that asks the LM for one text of class `label` (see the module docstring)."""
    domain, want = task.domain, task.description.replace("{label}", task.class_names[label])
    ask = f"Write one {'new ' if demos else ''}short {domain} {want}. Reply with the {domain} only."
    if not demos:
        return ask
    shown = "\n".join(f"- {' '.join(d.text.split())}" for d in demos)
    return f"Here are some {domain}s {want}:\n{shown}\n\n{ask}"



def class_demos(task, label: int, shots: int, key: str) -> list[Example]:
    """`shots` pool texts of class `label`, drawn with the string `key` (the same key, the same texts)."""
    rows = [ex for ex in task.pool if ex.label == label]
    if len(rows) < shots:
        raise ValueError(f"the pool has only {len(rows)} texts of class {task.class_names[label]!r}, fewer than "
                         f"{shots} demonstrations")
    return random.Random(key).sample(rows, shots)


def instruction_ids(tokenizer, task, text: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                               tokenize=False)
        return tokenizer(prompt, add_special_tokens=False).input_ids  # the template holds the special tokens
    answer = task.domain.split()[-1].capitalize()  # "Review" / "Tweet" / "Text"
    return tokenizer(f"{text}\n\n{answer}:").input_ids



_PREAMBLE = re.compile(r"^(sure|here|okay|ok|certainly|of course)\b.*:\s*$", re.I)
_ECHO = re.compile(r"^write (one|a|an)\b", re.I)  # the model repeating the instruction
_REFUSAL = re.compile(r"\bas an ai\b|\bi (cannot|can'?t) (write|create|help|provide)\b", re.I)  # not "I can't stand it"
_LABEL = re.compile(r"^(movie review|review|tweet|text)\s*:\s*", re.I)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def clean_generation(text: str, truncated: bool = False) -> str:
    """First real line of a sample: skip "Here is ...:" preambles and echoes of the instruction, drop a
    "Review:" label, surrounding quotes and markdown bold; a sample cut off by max_new_tokens (truncated=True,
    still on its first line) keeps its complete sentences only (if it has any).
    Returns "" for refusals ("as an AI ...") and outputs with fewer than 2 words (the caller drops them)."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln and not _PREAMBLE.match(ln) and not _ECHO.match(ln)]
    if not lines:
        return ""
    line = _LABEL.sub("", lines[0]).strip()
    quoted = re.match(r'^["“](.+?)["”]', line)
    line = (quoted.group(1) if quoted else line).strip('"“” ')  # a quoted text: what is inside the quotes
    if truncated and len(lines) == 1 and not re.search(r"[.!?\"”)]$", line):  # cut mid-sentence
        ends = [m.end() for m in _SENTENCE_END.finditer(line)]
        if ends:
            line = line[:ends[-1]]
    line = " ".join(line.replace("**", "").split())  # markdown bold
    if _REFUSAL.search(line):
        return ""
    return line if len(line.split()) >= 2 else ""
