"""What the model reads, on a scripted model whose prediction depends only on the name tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from factrecall_bench.analyses.reads import (
    ReadItem,
    ReadsSettings,
    bio_character_groups,
    qa_character_groups,
    reads_analysis,
    sentence_start,
    token_groups,
)

VOCAB, NAME_TOKENS, TARGET, PAD = 12, (5, 6), 9, 0


class ReadsOnlyNames(nn.Module):
    """logits = (sum over attended tokens of e_t[0]) * onehot(TARGET), where only the name tokens'
    embeddings have a non-zero first coordinate: the output depends on the name tokens alone."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 4)
        with torch.no_grad():
            self.embed.weight.normal_()
            self.embed.weight[:, 0] = 0.0
            self.embed.weight[list(NAME_TOKENS), 0] = 1.0
        self.readout = nn.Parameter(torch.nn.functional.one_hot(torch.tensor(TARGET), VOCAB)
                                    .float() * 3.0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None):
        vectors = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(vectors.shape[:2])
        evidence = (vectors[..., 0] * attention_mask).cumsum(1)  # causal: a prefix sum
        return SimpleNamespace(logits=evidence[..., None] * self.readout)


def scripted_items() -> list[ReadItem]:
    # [bos] name name relation relation rest rest -> TARGET
    groups = {"subject": [1, 2], "relation": [3, 4], "rest": [5, 6]}
    return [ReadItem([1, 5, 6, 3, 4, 7, 8], TARGET, groups),
            ReadItem([1, 7, 5, 6, 3, 4, 8], TARGET, {"subject": [2, 3], "relation": [4, 5],
                                                     "rest": [1, 6]})]


@pytest.mark.parametrize("method,occlusion", [("occlusion", "replace"),
                                              ("occlusion", "attention"),
                                              ("grad_x_input", "replace")])
def test_a_model_reading_only_the_name_puts_all_attribution_on_the_subject(method, occlusion):
    settings = ReadsSettings(method=method, occlusion=occlusion)
    result = reads_analysis(ReadsOnlyNames(), {"bio": scripted_items()}, PAD, settings)
    entry = result["formats"]["bio"]
    assert entry["n_scored"] == 2 and entry["n_informative"] == 2
    assert entry["share"] == {"subject": pytest.approx(1.0), "relation": 0.0, "rest": 0.0}
    assert result["settings"]["method"] == method


def test_only_correct_skips_values_the_model_does_not_predict():
    no_name = ReadItem([1, 3, 4, 7], TARGET, {"subject": [], "relation": [1, 2], "rest": [3]})
    entry = reads_analysis(ReadsOnlyNames(), {"qa": [no_name, *scripted_items()]}, PAD,
                           ReadsSettings())["formats"]["qa"]
    assert entry["n_items"] == 3 and entry["n_scored"] == 2
    assert entry["first_token_accuracy"] == pytest.approx(2 / 3)


def test_tokens_go_to_subject_first_then_relation_then_rest_and_bos_to_none():
    offsets = [(0, 5), (5, 10), (10, 14), (14, 20)]
    groups = token_groups(offsets, 4, subject=[(0, 5)], relation=[(0, 10)], shift=1)
    assert groups == {"subject": [1], "relation": [2], "rest": [3]}


def test_a_biography_value_reads_the_name_its_pronoun_and_its_sentence():
    text = ("Ann Lee Cho was born on May 1, 1990. She studied Physics at MIT. "
            "Her employer was Acme.")
    values = {attribute: (text.index(value), text.index(value) + len(value)) for attribute, value
              in [("birth_date", "May 1, 1990"), ("major", "Physics"), ("university", "MIT"),
                  ("company", "Acme")]}
    ends = [end for _, end in values.values()]
    assert text[slice(*values["company"])] == "Acme"
    assert sentence_start(text, values["company"][0], ends) == text.index("Her")
    assert sentence_start(text, values["birth_date"][0], ends) == 0
    subject, relation = bio_character_groups(text, "Ann Lee Cho", values["company"], ends, True)
    assert [text[a:b] for a, b in subject] == ["Ann Lee Cho", "Her"]
    assert [text[a:b] for a, b in relation] == ["Her employer was "]
    no_pronoun, _ = bio_character_groups(text, "Ann Lee Cho", values["company"], ends, False)
    assert [text[a:b] for a, b in no_pronoun] == ["Ann Lee Cho"]


def test_a_question_reads_the_name_and_the_question_words_with_the_cue_as_rest():
    prompt = "What major did Ann Lee Cho study? Answer:"
    subject, relation = qa_character_groups(prompt, "Ann Lee Cho")
    assert [prompt[a:b] for a, b in subject] == ["Ann Lee Cho"]
    assert [prompt[a:b] for a, b in relation] == ["What major did Ann Lee Cho study?"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ReadsSettings(method="saliency")
    with pytest.raises(ValueError):
        ReadsSettings(occlusion="blur")


def test_the_head_at_the_last_positions_gives_the_full_forwards_log_probs():
    from transformers import LlamaConfig, LlamaForCausalLM

    from factrecall_bench.analyses.reads import last_log_probs

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2)).eval()
    sequences = [[1, 5, 6, 3], [1, 7, 5, 6, 3, 4, 8], [1, 2], [1, 5, 6, 3, 4]]
    masks = [[1] * len(s) for s in sequences]
    masks[1][2] = 0  # an occluded token inside the context
    targets = [9, 3, 4, 9]
    log_probs, argmax = last_log_probs(model, sequences, masks, targets, PAD, batch_size=3)
    for sequence, mask, target, got, top in zip(sequences, masks, targets, log_probs, argmax,
                                                strict=True):  # the reference: one at a time
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence]),
                           attention_mask=torch.tensor([mask])).logits[0, -1]
        assert got == pytest.approx(float(logits.log_softmax(-1)[target]), abs=1e-5)
        assert top == (int(logits.argmax()) == target)
