"""What a picture's visual tokens give away, read without the LLM: the diagnosis behind the held-out scores.

The LLM sees a picture only as its grid of codes. Two measurements on those codes tell what any model of them can
learn from the training pairs:

- a linear probe: softmax regression on which codes a picture holds and how often (a bag of codes: where the
  shape sits does not matter), trained on the training pictures' codes to tell each attribute, scored on the
  evaluation pictures of seen and of held-out combinations;
- nearest neighbours: for each evaluation picture, the training picture sharing the most distinct codes with it;
  does it have the same shape, the same colour?

If the probe reads shape on seen combinations but not on held-out ones, and a held-out picture's nearest training
pictures share its colour, not its shape, then the tokens of a red triangle are the tokens of red circles and red
squares arranged differently: no token ties it to the blue, green and yellow triangles the LLM was taught, and
whatever the LLM learns from the training pairs answers with the colour's seen shapes. A tokenizer whose codes
carried shape apart from colour would show held-out probe accuracy near the seen one (``tests/train/test_world.py``
checks that the probe tells the two kinds of token apart).
"""

import numpy as np

from . import shapes


def bag_of_codes(grids, codebook_size):
    """(N, ...) code grids -> (N, codebook_size) counts of each code."""
    grids = np.asarray(grids).reshape(len(grids), -1)
    counts = np.zeros((len(grids), codebook_size))
    np.add.at(counts, (np.repeat(np.arange(len(grids)), grids.shape[1]), grids.reshape(-1)), 1.0)
    return counts


def fit_softmax(features, labels, classes, steps=1000, learning_rate=0.5, l2=1e-3):
    """Multinomial logistic regression by full-batch gradient descent from zero (deterministic) -> weights."""
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)  # a bias column
    weights = np.zeros((x.shape[1], classes))
    onehot = np.eye(classes)[labels]
    for _ in range(steps):
        logits = x @ weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= learning_rate * (x.T @ (p - onehot) / len(x) + l2 * weights)
    return weights


def predict_softmax(weights, features):
    return (np.concatenate([features, np.ones((len(features), 1))], axis=1) @ weights).argmax(axis=1)


def probe(train_grids, train_records, eval_grids, eval_records, codebook_size):
    """{"probe": {split: {attribute: accuracy}}, "nearest_training_picture": {split: {"same_" + attribute: rate}}}
    for the evaluation pictures of seen and held-out combinations (``records``: dicts with the attributes)."""
    train_x, eval_x = bag_of_codes(train_grids, codebook_size), bag_of_codes(eval_grids, codebook_size)
    # Standardised by the training pictures' statistics: plain gradient descent then fits them in ~1000 steps
    # (the world's training pictures: 99 % of their shapes told apart).
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-3
    train_z, eval_z = (train_x - mean) / std, (eval_x - mean) / std
    held = np.array([shapes.is_held_out(r["colour"], r["shape"]) for r in eval_records])
    splits = {"seen": ~held, "held_out": held}
    present = [s for s in splits if splits[s].any()]
    result = {"probe": {s: {} for s in present}, "nearest_training_picture": {s: {} for s in present}}
    for attribute, values in shapes.ATTRIBUTE_VALUES.items():
        train_y = np.array([values.index(r[attribute]) for r in train_records])
        eval_y = np.array([values.index(r[attribute]) for r in eval_records])
        right = predict_softmax(fit_softmax(train_z, train_y, len(values)), eval_z) == eval_y
        for split in result["probe"]:
            result["probe"][split][attribute] = float(right[splits[split]].mean())
    # Shared distinct codes: a picture's set of codes against every training picture's.
    nearest = ((eval_x > 0).astype(np.float32) @ (train_x > 0).T.astype(np.float32)).argmax(axis=1)
    for split in result["nearest_training_picture"]:
        rows = np.flatnonzero(splits[split])
        for attribute in ("colour", "shape"):
            same = [train_records[nearest[i]][attribute] == eval_records[i][attribute] for i in rows]
            result["nearest_training_picture"][split][f"same_{attribute}"] = float(np.mean(same))
    for split in result["probe"]:
        result["probe"][split]["count"] = int(splits[split].sum())
    return result


def training_codes(prepared_t2i):
    """(code grids, attribute records) of the pictures in a prepared T2I folder of the tiny world: the very tokens
    the LLM was trained on (the caption gives the attributes)."""
    from train.shards import ShardReader

    grids, records = [], []
    for row in ShardReader(prepared_t2i).read_all(columns=["text", "image", "height", "width"]):
        attributes = shapes.parse_caption(row["text"])
        if attributes is None:
            raise ValueError(f"{prepared_t2i}: {row['text']!r} is not a caption of the tiny world's grammar")
        grids.append(np.asarray(row["image"]).reshape(int(row["height"]), int(row["width"])))
        records.append(attributes)
    return np.stack(grids), records
