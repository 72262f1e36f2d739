"""Hugging Face Hub support for timm-cra: repo export, publishing, converters and a local Hub server."""
