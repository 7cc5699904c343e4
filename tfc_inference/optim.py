"""Adam written out on plain tensors, for optimization loops compiled into one ``tf.function``.

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)

(Kingma & Ba's update with the bias correction folded into the step size, as TF1's AdamOptimizer, which the
paper's code used; eps = 1e-8.)  Keeping the state as tensors instead of ``tf.Variable``s lets one trace serve
every image of a given size and makes batched optimization trivial.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import tensorflow as tf

BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8


def init_state(params: Sequence[tf.Tensor]) -> Tuple[List[tf.Tensor], List[tf.Tensor]]:
    """Zero first and second moments for each parameter tensor."""
    return [tf.zeros_like(p) for p in params], [tf.zeros_like(p) for p in params]


def adam_step(params, grads, ms, vs, step, learning_rate):
    """One Adam update; ``step`` is the 0-based step count.  Returns (params, ms, vs) as lists."""
    k = tf.cast(step + 1, tf.float32)
    lr = learning_rate * tf.sqrt(1.0 - BETA2 ** k) / (1.0 - BETA1 ** k)
    new_p, new_m, new_v = [], [], []
    for p, g, m, v in zip(params, grads, ms, vs):
        m = BETA1 * m + (1.0 - BETA1) * g
        v = BETA2 * v + (1.0 - BETA2) * tf.square(g)
        new_p.append(p - lr * m / (tf.sqrt(v) + EPSILON))
        new_m.append(m)
        new_v.append(v)
    return new_p, new_m, new_v
