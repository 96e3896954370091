#!/usr/bin/env python
"""Prepare t2i data for Emu3 SFT (see train/prepare.py and README "Fine-tuning")."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.prepare import prepare  # noqa: E402

if __name__ == "__main__":
    sys.exit(prepare("t2i", default_image_area=518400))
