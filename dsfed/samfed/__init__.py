"""SAM-Fed: SAM-guided federated semi-supervised segmentation (docs/DESIGN.md, "SAM-Fed")."""
