import pytest

from electra_jax.data.prepare import PrepareOptions, load_data_tokenizer, load_metadata, prepare
from electra_jax.data.tokenizer import WordPieceTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")


def sentences(shared_data, n=300):
    lines = (shared_data / "pretrain" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    return [l.strip() for l in lines if len(l.strip()) > 20][:n]


@pytest.fixture(scope="module")
def vocab_txt(shared_data, tmp_path_factory):
    """A WordPiece vocab.txt trained on real text (released checkpoints cannot be downloaded here)."""
    from tokenizers import BertWordPieceTokenizer
    out = tmp_path_factory.mktemp("wordpiece")
    tok = BertWordPieceTokenizer(lowercase=False)
    books = shared_data / "pretrain" / "gutenberg_nltk_tokenized"
    tok.train([str(books / "austen-emma.txt"), str(books / "carroll-alice.txt")], vocab_size=3000,
              special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.save_model(str(out))
    return out / "vocab.txt"


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_matches_transformers(shared_data, vocab_txt, lowercase, tmp_path):
    ours = WordPieceTokenizer(str(vocab_txt), lowercase=lowercase)
    ours.save_for_transformers(str(tmp_path))  # vocab.txt + tokenizer_config.json, as in a released model
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert theirs.do_lower_case == lowercase
    texts = sentences(shared_data) + ["Café naïve résumé", "中文字符 mixed with English", "[MASK] stays text"]
    expected = [theirs(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ours.encode(texts) == expected
    assert ours.special_ids == {k: theirs.convert_tokens_to_ids(v) for k, v in
                                dict(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]").items()}
    mask = ours.encode_with_masks("The capital of France is [MASK].")
    assert mask.count(ours.special_ids["mask"]) == 1


def test_prepare_with_a_wordpiece_vocab(shared_data, vocab_txt, tmp_path):
    text = shared_data / "pretrain" / "gutenberg_nltk_tokenized" / "blake-poems.txt"
    prepare(PrepareOptions(inputs=[str(text)], output_dir=str(tmp_path / "d"), tokenizer=str(vocab_txt),
                           seq_length=64, num_workers=1))
    meta = load_metadata(str(tmp_path / "d"))
    assert meta["tokenizer"] == "vocab.txt" and meta["vocab_size"] == 3000
    tok = load_data_tokenizer(meta)
    assert isinstance(tok, WordPieceTokenizer) and tok.lowercase
    assert meta["special_ids"] == tok.special_ids and meta["train"]["examples"] > 50


def test_sentencepiece_export_tokenizes_like_electra_jax(shared_data, prepared, tmp_path):
    """The HF tokenizer.json gives the ids electra-jax gives, on thousands of real lines plus runs of
    spaces, tabs, newlines, [MASK] (as fill-mask encodes it) and non-Latin text. The only freedom
    left is Viterbi's choice between segmentations of exactly equal score."""
    ours = load_data_tokenizer(prepared)
    ours.save_for_transformers(str(tmp_path))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    wiki = (shared_data / "pretrain" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    reviews = (shared_data / "chinese" / "waimai_10k.csv").read_text(encoding="utf-8").splitlines()[1:300]
    texts = [l for l in wiki if l.strip()][:3000] + reviews + [
        "a  b   c", "tab\there", " lead and trail  ", "line\nbreak", "x[MASK]y", "The capital is [MASK] .",
        "[MASK]", "two [MASK][MASK] masks", "  [MASK]  spaced  ", "日本語 テキスト\u3000全角"]
    differ = [t for t in texts if ours.encode_with_masks(t) != theirs(t, add_special_tokens=False)["input_ids"]]
    assert len(texts) > 3000 and len(differ) <= 0.001 * len(texts), differ[:3]
    score = {ours.id_to_piece(i): ours.sp.get_score(i) for i in range(ours.vocab_size)}
    for t in differ:  # the same text, cut into pieces of the same total score
        a, b = ours.encode_with_masks(t), theirs(t, add_special_tokens=False)["input_ids"]
        pieces_a, pieces_b = [ours.id_to_piece(i) for i in a], [ours.id_to_piece(i) for i in b]
        assert "".join(pieces_a) == "".join(pieces_b)
        assert sum(map(score.get, pieces_a)) == pytest.approx(sum(map(score.get, pieces_b)), abs=1e-4)
    assert theirs.mask_token_id == ours.special_ids["mask"] and theirs.pad_token_id == 0


def test_load_tokenizer_from_a_directory(vocab_txt, tmp_path):
    import json
    import shutil
    shutil.copyfile(vocab_txt, tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    tok = load_tokenizer(str(tmp_path))
    assert isinstance(tok, WordPieceTokenizer) and tok.lowercase is False
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(FileNotFoundError, match="has no tokenizer.model or vocab.txt"):
        load_tokenizer(str(tmp_path / "nothing_here"))
