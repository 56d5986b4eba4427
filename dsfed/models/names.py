"""Registered model names, importable without torch (config validation uses them)."""

MODEL_NAMES = ("nnunet", "sam_demo", "sam_vit_b", "sam_vit_h", "sam_vit_l", "tinysam", "tinysam_demo", "unet", "unet_lite0")
