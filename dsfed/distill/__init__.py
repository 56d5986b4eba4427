"""Learnability-guided mutual distillation (DSFedMed): per-sample scores, pool selection, the KD loss."""
