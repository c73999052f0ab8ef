"""lm-evaluation-harness on an exported MM-Rec folder, offline: its log-likelihoods against MMRecLM's
log-probabilities, and the shipped tasks (mmrec_model/hf/tasks) run to the end."""
import math

import pytest
import torch
import torch.nn.functional as F

from . import require

require("transformers")
require("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from mmrec_model import MMRecConfig, MMRecLM  # noqa: E402
from mmrec_model.hf import TASKS_DIR, MMRecForCausalLM, save_hf_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    """The tiny preset at its own initialisation: log-probabilities near -log(V), whose float32 sums over a few
    tokens resolve to well under 1e-5."""
    torch.manual_seed(0)
    return MMRecLM(MMRecConfig.preset("tiny")).eval()


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, lm, tok):
    path = tmp_path_factory.mktemp("eval") / "mmrec-tiny"
    MMRecForCausalLM.from_mmrec(lm).save_pretrained(path)
    save_hf_tokenizer(tok, path)
    return path


@pytest.fixture(scope="module")
def harness(eval_dir):
    return HFLM(pretrained=str(eval_dir), backend="causal", batch_size=1, device="cpu", dtype="float32")


def mmrec_logprob(lm, ids, n_context):
    """Sum of MMRecLM's log-probabilities of ids[n_context:] after ids[:n_context] (log-softmax in the model's
    float32, summed in float64)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = F.log_softmax(lm(x[:, :-1])[0], -1)[0].double()
    targets = x[0, n_context:]
    return logp[n_context - 1:].gather(-1, targets[:, None]).sum().item()


def test_loglikelihood_equals_mmrec(harness, lm, tok):
    pairs = [("ROMEO:\nBut soft, what light", " through yonder"),
             ("First Citizen:\nBefore we proceed any further,", " hear me")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    results = harness.loglikelihood(requests)
    for (context, continuation), (ll, _greedy) in zip(pairs, results):
        whole = tok.encode(context + continuation)
        n_context = len(tok.encode(context))
        assert whole[:n_context] == tok.encode(context)       # the split lm-eval makes
        assert ll == pytest.approx(mmrec_logprob(lm, whole, n_context), abs=1e-5)


def test_shipped_tasks_run(harness):
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(model=harness, tasks=["mmrec_wikitext2", "mmrec_shakespeare_mc"],
                                      task_manager=TaskManager(include_path=TASKS_DIR), limit=2,
                                      bootstrap_iters=0)["results"]
    mc = results["mmrec_shakespeare_mc"]
    assert 0.0 <= mc["acc,none"] <= 1.0
    wiki = results["mmrec_wikitext2"]
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert math.isfinite(wiki[metric]) and wiki[metric] > 0, metric
