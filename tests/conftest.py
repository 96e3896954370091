import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ logging: errors only

from emu3.device import select_device  # noqa: E402

select_device("CPU")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# The longest files first. The suite runs in two processes (tests/pytest.ini: `-n 2 --dist loadfile`), which take
# whole files in collection order; starting the long ones first lets both finish together instead of one
# process running the longest file alone at the end.
LONGEST_FILES = ("train/test_tiny_world.py", "train/test_distributed_trainer.py", "test_scripts.py",
                 "tokenizer/test_vq_parity.py", "parallel/test_zero.py", "parallel/test_sequence_parallel.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FILES) if path.endswith(name)), len(LONGEST_FILES))

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept
