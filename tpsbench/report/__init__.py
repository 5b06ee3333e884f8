"""Presentation: every table, line, markdown file and plot tpsbench shows, built from data computed elsewhere.

Tables are built once as :class:`~tpsbench.report.tables.TableData` and rendered by one of two renderers
(:func:`~tpsbench.report.tables.to_rich` for the terminal, fitted to its width; :func:`to_markdown` for files),
so the terminal and a report always show the same numbers; numbers go through
:func:`~tpsbench.report.format.fmt`. One module per command's output."""
