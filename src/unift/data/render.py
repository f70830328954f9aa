"""Render an `Example` into token ids plus one role per token.

Roles (one int per token; every loss selects its tokens by role, see docs/architecture.md):
    PROMPT     the question and template: never trained
    HINT       forced reference text after the prompt (UFT): trained by log-likelihood only
    GENERATED  text the policy sampled: trained by the RL loss
    TARGET     the reference response in SFT/DFT: trained by NLL/DFT

Templates
    plain  the prompt text as is (the TinyZero template of the official UFT data already ends
           with "Assistant: Let me solve this step by step.\\n<think> "); the reference
           response is followed by the EOS token.
    chat   the tokenizer's chat template with the generation prompt; the response is followed
           by the template's end-of-turn token (EOS).
    auto   plain for text prompts and the official verl data, chat for conversational rows.

Prompt and response are tokenised separately and concatenated, so the prompt tokens of
training and of generation are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

from unift.errors import UserError
from unift.tasks.base import Example

PROMPT, HINT, GENERATED, TARGET = 0, 1, 2, 3


@dataclass
class Rendered:
    input_ids: list[int]  # [T]
    roles: list[int]      # [T], one of PROMPT / HINT / GENERATED / TARGET
    truncated: bool = False


def resolve_template(example: Example, template: str) -> str:
    if template != "auto":
        return template
    return "chat" if isinstance(example.prompt, list) else "plain"


def prompt_text(example: Example, tokenizer, template: str) -> str:
    """The prompt as text, ready to be continued by the model."""
    template = resolve_template(example, template)
    if template == "chat":
        messages = example.prompt if isinstance(example.prompt, list) else [
            {"role": "user", "content": example.prompt}]
        if getattr(tokenizer, "chat_template", None) is None:
            raise UserError("data.template=chat but the model's tokenizer has no chat template; "
                            "use data.template=plain")
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(example.prompt, list):
        return "\n".join(str(m.get("content", "")) for m in example.prompt)
    return example.prompt


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens added by the tokenizer."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def render_prompt(example: Example, tokenizer, template: str = "auto", hint: str = "",
                  max_prompt_tokens: int = 0, where: str = "", finished: bool = False) -> Rendered:
    """Prompt tokens (PROMPT) followed by an optional hint (HINT), for generation.

    finished: the hint is a whole reference response, so the end of response (EOS, or the chat
    template's end of turn) follows it as HINT tokens too: the hint log-likelihood then trains
    the model to stop after its answer, and there is nothing left to generate."""
    ids = encode(tokenizer, prompt_text(example, tokenizer, template))
    bos = tokenizer.bos_token_id
    if (resolve_template(example, template) == "plain" and getattr(tokenizer, "add_bos_token", False)
            and bos is not None and ids[:1] != [bos]):
        ids = [bos] + ids
    if max_prompt_tokens and len(ids) > max_prompt_tokens:
        raise UserError(f"{where or 'a prompt'} has {len(ids)} tokens, more than "
                        f"data.max_prompt_tokens={max_prompt_tokens}; raise the limit or drop the row")
    hint_ids = encode(tokenizer, hint)
    if finished and hint:
        hint_ids += end_of_response(example, tokenizer, template)
    return Rendered(ids + hint_ids, [PROMPT] * len(ids) + [HINT] * len(hint_ids))


def end_of_response(example: Example, tokenizer, template: str) -> list[int]:
    """Tokens that close a response: the chat template's end of turn, or EOS for plain text."""
    if resolve_template(example, template) == "chat":
        prompt = prompt_text(example, tokenizer, "chat")
        messages = example.prompt if isinstance(example.prompt, list) else [
            {"role": "user", "content": example.prompt}]
        marker = "\x00unift-response\x00"
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": marker}], tokenize=False)
        if full.startswith(prompt) and marker in full:
            return encode(tokenizer, full.split(marker, 1)[1])
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def render_sft(example: Example, tokenizer, template: str = "auto", max_prompt_tokens: int = 0,
               max_response_tokens: int = 0, where: str = "") -> Rendered:
    """Prompt (PROMPT) + reference response + EOS (TARGET), for SFT and DFT."""
    if example.completion is None:
        raise UserError(f"{where or 'a row'} has no reference response (column 'completion', "
                        f"'answer' or an assistant message) needed for SFT/DFT")
    rendered = render_prompt(example, tokenizer, template, "", max_prompt_tokens, where)
    target = encode(tokenizer, example.completion)
    end = end_of_response(example, tokenizer, template)
    target = target + end
    truncated = bool(max_response_tokens) and len(target) > max_response_tokens
    if truncated:
        target = target[:max_response_tokens]
    return Rendered(rendered.input_ids + target, rendered.roles + [TARGET] * len(target), truncated)
