"""One module per report section; each has ``build(context) -> ReportSection``.

To add a section: write a module here with a ``build`` function (figures via analysis.plots, HTML via
analysis.html) and add it to ``SECTIONS`` in analysis/report.py, in the order the page shows it.
"""
