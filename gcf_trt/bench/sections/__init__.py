"""One module per section of ``gcf-trt bench``; each exposes ``section(ctx) -> dict``.

A section returns a plain JSON-able dict.  A missing piece - a backend that is not installed,
a build the gate refused - is recorded as ``unavailable`` with the reason, never a crash.
"""
