"""pass@k: the probability that at least one of k samples is correct, estimated from n >= k samples.

The unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code"): with c correct among n samples, pass@k = 1 - C(n-c, k) / C(n, k), the chance that a
k-subset drawn without replacement from the n samples contains a correct one. The ratio of
binomials overflows floats for large n, so it is computed as the product
C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
"""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c of them correct; requires 1 <= k <= n.

    Example: n=2, c=1, k=1 -> 1 - 1/2 = 0.5; n=5, c=1, k=2 -> 1 - C(4,2)/C(5,2) = 1 - 6/10 = 0.4.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(
            f"pass@k needs 1 <= k <= n (the estimator is unbiased only for k <= n), got n={n}, k={k}"
        )
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(correct_counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """Mean over problems of pass@k, for each k in ks.

    correct_counts: [P] number of correct samples per problem, each problem sampled n times.
    Returns {k: mean pass@k}. Raises ValueError on no problems or on k > n.
    """
    if len(correct_counts) == 0:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return {
        int(k): sum(pass_at_k(n, int(c), int(k)) for c in correct_counts) / len(correct_counts) for k in ks
    }
