"""transformer_lib: the Transformer, built step by step in the notebooks of the course.

Every module but this one is generated from a notebook (see the header of each file). This file is written by
hand and lists the public API, chapter by chapter.
"""

__all__: list[str] = []
