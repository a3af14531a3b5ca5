"""The bounds a template must keep to compile: its size, its paths' length, its variables.

The same three numbers as the ``[limits]`` table (:class:`engine.config.LimitsConfig`), under
the same names, so an error can name the key to raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import LimitsConfig

__all__ = ["DEFAULT_LIMITS", "TemplateLimits"]


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Bounds checked while compiling; past one, :class:`~engine.errors.TemplateError` names
    it (``a path has 40 parts; [limits] template_path_depth is 32``) with ``line:col``.

    ``template_bytes``: UTF-8 bytes of source. ``template_path_depth``: parts of one path,
    its root included (``lead.a.b`` has 3; loop-variable and ``loop.*`` paths too).
    ``template_variables``: distinct context paths (what ``Template.variables`` lists).
    """

    template_bytes: int = 100_000
    template_path_depth: int = 32
    template_variables: int = 1_000

    @classmethod
    def of(cls, limits: LimitsConfig) -> TemplateLimits:
        """The template bounds of a workspace's ``[limits]``."""
        return cls(
            template_bytes=limits.template_bytes,
            template_path_depth=limits.template_path_depth,
            template_variables=limits.template_variables,
        )


DEFAULT_LIMITS = TemplateLimits()
"""The defaults of ``[limits]``: what :func:`compile_template` applies unless told otherwise."""
