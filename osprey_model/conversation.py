"""The Vicuna v1 conversation template and Osprey's prompts, as the released model was trained on them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEPARATORS = (" ", "</s>")

IMAGE_TOKEN = "<image>"
MASK_TOKEN = "<mask>"
POS_TOKEN = "<pos>"
REGION_TOKENS = MASK_TOKEN + POS_TOKEN

IMAGE_PREFIX = f"{IMAGE_TOKEN}\nThis provides an overview of the picture.\n"
# The released training data spell it "Ther are" and say "1 part region" but "2 part regions"; the weights
# were trained on that text, so keep it.
MULTI_REGION_PREFIX = "Ther are {count} part {noun} in the picture: {regions}. "
SHORT_ANSWER_SUFFIX = " Answer the question using a single word or phrase."

PROMPTS = {
    "short": f"Please give me a short description of {REGION_TOKENS}. Using a short phrase.",
    "detailed": f"Can you give me a detailed description of {REGION_TOKENS}?",
    "category": f"What is the category of {REGION_TOKENS}? Using only one word or phrase.",
}

_REGION_REF = re.compile(r"<region(\d*)>")


def region_prompt(prompt: str) -> str:
    """A prompt for one region: a preset name, or a free question that names the region as ``<region>``.

    A free question without ``<region>`` is asked about "this region" (``<mask><pos>`` is appended).
    """
    if prompt in PROMPTS:
        return PROMPTS[prompt]
    if not prompt.strip():
        raise ValueError("empty prompt: give a preset (short, detailed, category) or a question")
    if "<region" in prompt:
        return _REGION_REF.sub(REGION_TOKENS, prompt)
    if MASK_TOKEN in prompt:
        return prompt
    return f"{prompt.rstrip()} (region: {REGION_TOKENS})"


def multi_region_prefix(count: int) -> str:
    regions = ",".join(f"region{i + 1}{REGION_TOKENS}" for i in range(count))
    return MULTI_REGION_PREFIX.format(count=count, noun="region" if count == 1 else "regions", regions=regions)


def refer_to_regions(text: str) -> str:
    """Turn ``<regionN>`` references into the ``regionN`` names the multi-region prefix introduced."""
    return _REGION_REF.sub(lambda m: f"region{m.group(1)}" if m.group(1) else "the region", text)


@dataclass
class Conversation:
    """A Vicuna v1 dialogue; ``messages`` alternate USER / ASSISTANT, the last answer may be pending."""

    messages: list[tuple[str, str | None]] = field(default_factory=list)

    def append(self, role: str, text: str | None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        expected = ROLES[len(self.messages) % 2]
        if role != expected:
            raise ValueError(f"expected a {expected} turn next, got {role}")
        self.messages.append((role, text))

    def prompt(self) -> str:
        text = SYSTEM + SEPARATORS[0]
        for i, (role, message) in enumerate(self.messages):
            if message is None:
                text += f"{role}:"
            else:
                text += f"{role}: {message}{SEPARATORS[i % 2]}"
        return text


def conversation_question(question: str) -> str:
    """A question about ``<region1>`` in the released multi-region conversation form, for one region ("Ther
    are 1 part region in the picture: region1<mask><pos>. What is the colour of region1? ..."): the text
    up to ``<mask>`` is the same for every region, so all regions of a frame still share one prefix."""
    return multi_region_prefix(1) + refer_to_regions(question)


# Typed attributes: short answers, each question asked of all a frame's regions in one batched pass.
# Category is the short-form preset; the others are asked as Osprey's conversation data asks them.
ATTRIBUTE_QUESTIONS = {
    "category": PROMPTS["category"],
    "colour": conversation_question("What is the colour of <region1>?" + SHORT_ANSWER_SUFFIX),
    "material": conversation_question("What material is <region1> made of?" + SHORT_ANSWER_SUFFIX),
    "state": conversation_question(
        "What state is <region1> in, for example open, closed, empty, full, on or off?" + SHORT_ANSWER_SUFFIX
    ),
}


def single_region_prompt(question: str) -> str:
    """The full prompt that asks ``question`` about one region, ready for generation."""
    conversation = Conversation()
    conversation.append(ROLES[0], IMAGE_PREFIX + region_prompt(question))
    conversation.append(ROLES[1], None)
    return conversation.prompt()


def image_question_prompt(question: str) -> str:
    """A question about the whole picture, no region: the released POPE evaluation's "<image>\n" + question."""
    conversation = Conversation()
    conversation.append(ROLES[0], f"{IMAGE_TOKEN}\n{question.strip()}")
    conversation.append(ROLES[1], None)
    return conversation.prompt()


def multi_region_prompt(region_count: int, turns: list[tuple[str, str | None]]) -> str:
    """A chat about ``region_count`` regions: the prefix lists them, questions refer to ``<regionN>``.

    ``turns`` is a list of (question, answer) pairs; the last answer is ``None`` (to be generated).
    """
    if not turns or turns[-1][1] is not None:
        raise ValueError("the last turn must be an unanswered question")
    conversation = Conversation()
    for i, (question, answer) in enumerate(turns):
        text = refer_to_regions(question)
        if i == 0:
            text = IMAGE_PREFIX + multi_region_prefix(region_count) + text
        conversation.append(ROLES[0], text)
        conversation.append(ROLES[1], answer)
    return conversation.prompt()
