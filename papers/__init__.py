"""The project's paper, built from the library.

``python -m papers.build`` computes every number, table and figure of
``papers/paper.md`` from ``retrystorm`` and fills the placeholders of
``papers/paper.template.md``; see `papers.build`.
"""
