"""dsfed: federated segmentation with a foundation model and lightweight clients (DSFedMed, SAM-Fed)."""

__version__ = "0.1.0"
