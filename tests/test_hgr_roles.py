"""`vtr roles` (pipeline/text/hgr_roles.py): HGR's sent2rolegraph.augment.json from any captions file.

The reference reader (hgr_v2t / HANet readers/rolegraphs.py) splits a caption on whitespace and its
node spans index those words; scripts/run_reference_on_export.py shows that reader loading and
training on this file. Here: the formats read, the span mapping, and the file read back by our
hgr-json backend.
"""
from __future__ import annotations

import json

import pytest

from pipeline.config import TextConfig
from pipeline.text.hgr_roles import CaptionsFileError, read_captions_file, run_roles, word_index
from pipeline.text.parse import parse_captions

CAPS = ["A man rides a horse.", "the dog chases a ball while a girl sings on stage", "a woman is cooking"]


def test_captions_from_txt_json_csv(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(CAPS) + "\n\n" + CAPS[0] + "\n")
    assert read_captions_file(tmp_path / "c.txt") == CAPS            # blank lines and repeats dropped
    (tmp_path / "ref.json").write_text(json.dumps({"video1": CAPS[:2], "video2": [CAPS[2]]}))
    assert read_captions_file(tmp_path / "ref.json") == CAPS
    (tmp_path / "msr.json").write_text(json.dumps({"sentences": [{"caption": c, "video_id": "v"} for c in CAPS]}))
    assert read_captions_file(tmp_path / "msr.json") == CAPS
    (tmp_path / "vatex.json").write_text(json.dumps([{"videoID": "x", "enCap": CAPS}]))
    assert read_captions_file(tmp_path / "vatex.json") == CAPS
    (tmp_path / "m.csv").write_text('path,captions\nv.mp4,"' + json.dumps(CAPS).replace('"', '""') + '"\n')
    assert read_captions_file(tmp_path / "m.csv") == CAPS
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(CaptionsFileError, match="no captions"):
        read_captions_file(tmp_path / "e.json")


def test_spacy_tokens_map_onto_whitespace_words():
    assert word_index("A man rides a horse.", ["A", "man", "rides", "a", "horse", "."]) == [0, 1, 2, 3, 4, 4]
    assert word_index("don't stop", ["do", "n't", "stop"]) == [0, 0, 1]
    assert word_index("a b", ["a", "c"]) is None


def test_roles_file_in_hgr_format_read_back(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(CAPS))
    cfg = TextConfig(spacy_model="en_core_web_sm")
    report = run_roles(tmp_path / "c.txt", tmp_path / "g.json", cfg)
    assert report["counts"]["captions"] == 3 and report["counts"]["unaligned"] == 0
    data = json.loads((tmp_path / "g.json").read_text())
    assert list(data) == CAPS
    for cap, (nodes, edges) in data.items():
        words = cap.split()
        assert nodes["ROOT"]["words"] == words
        for node_id, n in nodes.items():
            assert all(0 <= i < len(words) for i in n["spans"]) and n["words"] == [words[i] for i in n["spans"]]
        assert all(e[0] in nodes and e[1] in nodes and nodes[e[0]]["role"] == "V" for e in edges)
    first = data[CAPS[0]][0]
    verbs = [n for n in first.values() if n["role"] == "V"]
    assert [v["words"] for v in verbs] == [["rides"]]
    assert any(n["words"] == ["a", "horse."] for n in first.values())   # "horse." is one reader word
    # our hgr-json backend reads it as the released files
    parsed = parse_captions(CAPS, TextConfig(spacy_model="en_core_web_sm", backend="hgr-json",
                                             hgr_json=str(tmp_path / "g.json")))
    assert all(p.status == "ok" and p.graph is not None for p in parsed)
    assert parsed[0].graph.frames()["rides"][0][0] in ("ARG0", "ARG1")


def test_roles_cli(tmp_path, capsys):
    from flows.cli import main

    (tmp_path / "c.txt").write_text(CAPS[2])
    assert main(["roles", str(tmp_path / "c.txt"), "--out", str(tmp_path / "o.json"),
                 "--spacy-model", "en_core_web_sm"]) == 0
    assert "1 captions ->" in capsys.readouterr().out
    assert list(json.loads((tmp_path / "o.json").read_text())) == [CAPS[2]]
