"""Supervised fine-tuning on seeds plus evolved data: formatting, packing, the training loop, Ray Train."""
