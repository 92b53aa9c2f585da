"""One module (or sub-package) per method: its models, loaders and a pipeline with an explicit denoising loop."""
