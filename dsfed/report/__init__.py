"""The DSFedMed report: self-contained HTML and a Markdown summary (built by ``dsfed.stages.report``; ``figures`` draws its plots)."""
