"""The DSFedMed report: self-contained HTML and a Markdown summary (``dsfed.report.build``)."""
