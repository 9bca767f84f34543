"""Chat templates: compile a checkpoint's Jinja template in a sandbox and render a conversation with it.

Templates come from checkpoints, so they are untrusted: they run in Jinja's immutable sandbox and see plain data
only. The environment gives templates ``trim_blocks``/``lstrip_blocks``, loop controls, ``raise_exception``,
``strftime_now`` and a ``tojson`` that keeps non-ASCII text and does not escape HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    context: Mapping[str, Any],
) -> str:
    """Render a conversation with a chat template.

    Args:
        template: the Jinja source.
        messages: ``[{"role": "user", "content": "..."}, ...]``.
        add_generation_prompt: end with the template's cue for the assistant's turn.
        context: other template variables (special tokens, ``tools``, ``documents``, ...).

    Returns:
        The rendered text.
    """
    plain_messages = json.loads(json.dumps(list(messages)))  # plain data only inside the sandbox
    return compile_chat_template(template).render(
        messages=plain_messages, add_generation_prompt=add_generation_prompt, **context
    )


@lru_cache(maxsize=16)
def compile_chat_template(template: str) -> Any:
    """Compile a chat template in an immutable Jinja sandbox (templates come from checkpoints: untrusted).

    Args:
        template: the Jinja source.

    Returns:
        The compiled ``jinja2.Template`` (cached: the last 16 templates).
    """
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, indent: int | None = None) -> str:  # Jinja's own escapes HTML, which chat text must keep
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
