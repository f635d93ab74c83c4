import math

import pytest
import torch
from margins import within
from torch.testing import assert_close

from rlvr.algo import kl_penalty

LN2 = math.log(2)
# pi(token) = [0.5, 0.25], pi_ref(token) = [0.25, 0.5] -> d = ref_logp - logp = [-ln 2, +ln 2]
LOGP = torch.log(torch.tensor([[0.5, 0.25]]))
REF = torch.log(torch.tensor([[0.25, 0.5]]))


def test_k1_k2_k3_hand_values():
    assert_close(kl_penalty(LOGP, REF, "k1"), torch.tensor([[LN2, -LN2]]))  # -d
    assert_close(kl_penalty(LOGP, REF, "k2"), torch.tensor([[LN2**2 / 2, LN2**2 / 2]]))  # 0.2402
    # k3 = exp(d) - d - 1: 0.5 + ln2 - 1 = 0.19315 ; 2 - ln2 - 1 = 0.30685
    assert_close(kl_penalty(LOGP, REF, "k3"), torch.tensor([[LN2 - 0.5, 1 - LN2]]))
    assert_close(kl_penalty(LOGP, REF), kl_penalty(LOGP, REF, "k3"))  # k3 is the default


def test_k3_keeps_its_digits_near_the_reference():
    # a policy close to its reference: d = 1e-4 .. 1e-2, k3 = d^2/2 + d^3/6 + ... = 5e-9 .. 5e-5. In float32,
    # exp(d) - d - 1 carries the rounding of exp(d) near 1, ~eps (relative error 10 at d = 1e-4); expm1(d) - d
    # carries that of expm1(d) ~ d, ~eps * d: measured at most 0.39 eps * d (AMD EPYC), bound 8 eps * d
    d = torch.logspace(-4, -2, 9, dtype=torch.float64).view(1, -1)
    eps_d = torch.finfo(torch.float32).eps * d
    exact = kl_penalty(torch.zeros_like(d), d, "k3")
    got = kl_penalty(torch.zeros_like(d, dtype=torch.float32), d.float(), "k3").double()
    within(((got - exact).abs() / eps_d).max(), 8.0, "k3 error over eps * d")
    naive = (d.float().exp() - d.float() - 1).double()
    assert ((naive - exact).abs() / eps_d).max() > 100  # what the old formula lost
    assert ((naive - exact).abs() / exact).max() > 1e-2


def test_k3_is_non_negative_zero_at_equality_and_clamped():
    d = torch.linspace(-30.0, 30.0, 121).view(1, -1)
    k3 = kl_penalty(torch.zeros_like(d), d, "k3")
    assert torch.isfinite(k3).all() and (k3 >= 0).all()
    assert_close(kl_penalty(LOGP, LOGP, "k3"), torch.zeros(1, 2))
    # d = 100 is clamped to 20: exp(20) - 20 - 1 = 485165174.4
    far = kl_penalty(torch.tensor([[-100.0]]), torch.tensor([[0.0]]), "k3")
    assert_close(far, torch.tensor([[math.exp(20) - 21]]))


@pytest.mark.seeded_statistics
def test_k1_and_k3_are_unbiased_on_samples_from_pi():
    # pi = [0.5, 0.25, 0.25], ref = [0.25, 0.25, 0.5]:
    # KL(pi||ref) = 0.5 ln(0.5/0.25) + 0.25 ln 1 + 0.25 ln(0.25/0.5) = 0.5 ln2 - 0.25 ln2 = 0.25 ln2 = 0.1733
    pi = torch.tensor([0.5, 0.25, 0.25])
    ref = torch.tensor([0.25, 0.25, 0.5])
    idx = torch.multinomial(pi, 100_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = pi.log()[idx].view(1, -1), ref.log()[idx].view(1, -1)
    for est in ("k1", "k3"):
        assert_close(kl_penalty(logp, ref_logp, est).mean(), torch.tensor(0.25 * LN2), atol=0.01, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(LOGP, REF, "k4")
    with pytest.raises(ValueError, match="same shape"):
        kl_penalty(LOGP, REF.view(2, 1))
