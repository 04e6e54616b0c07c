#!/usr/bin/env bash
# Build an NLTK data folder holding Princeton WordNet 3.0 without the internet.
#
#   scripts/setup_wordnet.sh [DIR]      (default: $NLTK_DATA, else <repo>/.nltk_data)
#
# nltk.download('wordnet') cannot reach its server here, and no Debian package
# ships nltk_data. Debian's wordnet-base + wordnet-sense-index carry the same
# WordNet 3.0 database under /usr/share/wordnet; NLTK 3.10 reads it when the
# files are COPIED (it rejects symlinks) into DIR/corpora/wordnet/ together
# with a `lexnames` file, which Debian does not ship: its 45 lines are the
# table of the lexnames(5WN) man page (file number, name, syntactic category
# 1 noun / 2 verb / 3 adjective / 4 adverb) and are written below.
#
# Idempotent: files already present with the same size are left alone; the
# script says what it did. Installs the two Debian packages when missing
# (needs root / apt-get). Afterwards run code with NLTK_DATA=DIR, or keep the
# default <repo>/.nltk_data, which pipeline/text/resources.py finds by itself.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_DIR="${NLTK_DATA:-$REPO/.nltk_data}"
DIR="${1:-${DEFAULT_DIR%%:*}}"
SRC=/usr/share/wordnet
DEST="$DIR/corpora/wordnet"
FILES="adj.exc adv.exc cntlist cntlist.rev data.adj data.adv data.noun data.verb
frames.vrb index.adj index.adv index.noun index.sense index.verb noun.exc
sentidx.vrb sents.vrb verb.exc"

install_debian_packages() {
    if [ -f "$SRC/data.noun" ] && [ -f "$SRC/index.sense" ]; then
        echo "wordnet: Debian packages present ($SRC)"
        return
    fi
    echo "wordnet: installing Debian packages wordnet-base wordnet-sense-index"
    if [ "$(id -u)" != 0 ]; then
        echo "error: need root for apt-get; run: sudo apt-get install wordnet-base wordnet-sense-index" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        wordnet-base wordnet-sense-index >/dev/null
}

copy_files() {
    local copied=0 kept=0 f
    mkdir -p "$DEST"
    for f in $FILES; do
        if [ -f "$DEST/$f" ] && [ ! -L "$DEST/$f" ] && \
           [ "$(stat -c %s "$DEST/$f")" = "$(stat -c %s "$SRC/$f")" ]; then
            kept=$((kept + 1))
        else
            rm -f "$DEST/$f"
            cp "$SRC/$f" "$DEST/.tmp-$f" && mv "$DEST/.tmp-$f" "$DEST/$f"
            copied=$((copied + 1))
        fi
    done
    echo "wordnet: $copied file(s) copied, $kept already up to date -> $DEST"
}

lexnames_table() {
    local n=0 name
    for name in adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact \
        noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling \
        noun.food noun.group noun.location noun.motive noun.object noun.person \
        noun.phenomenon noun.plant noun.possession noun.process noun.quantity \
        noun.relation noun.shape noun.state noun.substance noun.time verb.body \
        verb.change verb.cognition verb.communication verb.competition \
        verb.consumption verb.contact verb.creation verb.emotion verb.motion \
        verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl; do
        case "$name" in
            noun.*) cat=1 ;; verb.*) cat=2 ;; adj.*) cat=3 ;; adv.*) cat=4 ;;
        esac
        printf '%02d\t%s\t%s\n' "$n" "$name" "$cat"
        n=$((n + 1))
    done
}

write_lexnames() {
    local tmp="$DEST/.tmp-lexnames"
    lexnames_table >"$tmp"
    if [ "$(wc -l <"$tmp")" != 45 ]; then
        echo "error: lexnames table is not 45 lines" >&2
        rm -f "$tmp"
        exit 1
    fi
    if [ -f "$DEST/lexnames" ] && cmp -s "$tmp" "$DEST/lexnames"; then
        rm -f "$tmp"
        echo "wordnet: lexnames already up to date"
    else
        mv "$tmp" "$DEST/lexnames"
        echo "wordnet: lexnames written (45 lines, from lexnames(5WN))"
    fi
}

install_debian_packages
copy_files
write_lexnames
echo "wordnet: ready; NLTK_DATA=$DIR (pipeline/text finds $REPO/.nltk_data by default)"
