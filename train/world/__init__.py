"""The tiny world: a synthetic multimodal dataset (one shape on a plain background), its scorer and its report."""
