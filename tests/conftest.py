import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ logging: errors only

from emu3.device import select_device  # noqa: E402

select_device("CPU")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
