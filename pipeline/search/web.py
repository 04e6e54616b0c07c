"""`vtr serve`: a small web page over a :class:`pipeline.search.query.Searcher` (FastAPI).

Routes: ``/`` the page (search box, results with thumbnails, per-level score bars, shared
concepts; clicking a result shows its concept heatmap); ``/api/search?q=&top=&k=&exhaustive=``
JSON (errors, a query over 300 characters or a bad parameter included: HTTP 400 ``{"error": one message}``,
the query never echoed back); ``/?q=...`` opens the page with that search run (the page keeps ``?q=``
current); ``/api/heatmap/<row>.png``; ``/api/info``;
``/files/<path>``: ONLY the thumbnail files the index lists (a lookup in that set, so no
path can reach anything else). Binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import html
import json
import threading
from typing import Any

from pipeline.search.encode import DEFAULT_K, DEFAULT_TOP, MAX_QUERY_CHARS, SearchError
from pipeline.search.query import Searcher

LEVEL_NAMES = {"ind_a": "individual (verbs)", "ind_e": "individual (nouns)", "loc_a": "local (verbs)",
               "loc_e": "local (nouns)", "glo": "global", "c_p": "concepts"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vtr search</title>
<style>
body{font-family:sans-serif;margin:1.5em;max-width:1100px}
#q{width:60%;font-size:1.1em;padding:.3em} button{font-size:1.1em}
#error{color:#b00;margin:.5em 0;min-height:1.2em}
.result{border:1px solid #ccc;border-radius:6px;padding:.5em;margin:.5em 0;cursor:pointer;display:flex;gap:1em}
.result:hover{background:#f4f7ff} .result.open{border-color:#36c}
.thumbs img{height:54px;margin-right:2px} .nothumb{color:#888;font-size:.8em;width:120px}
.bars{font-size:.75em;width:330px} .barrow{display:flex;align-items:center;gap:.3em}
.barlabel{width:110px} .bartrack{background:#eee;width:150px;height:9px}
.bar{background:#36c;height:9px} .meta{font-size:.85em} .score{font-weight:bold}
#detail{margin-top:1em} #heatmap{max-width:100%}
</style></head><body>
<h2>Text &rarr; video search</h2>
<div class="meta">__INFO__</div>
<form id="f"><input id="q" name="q" maxlength="__MAXLEN__" placeholder="a man rides a horse" autofocus>
<button id="go" type="submit">Search</button></form>
<div id="error"></div><div id="summary" class="meta"></div><div id="results"></div>
<div id="detail" hidden><h3 id="detail-title"></h3><img id="heatmap" alt="concept heatmap"></div>
<script>
const LEVELS = __LEVELS__;
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function openResult(div, h){
  document.querySelectorAll('.result.open').forEach(e=>e.classList.remove('open'));
  div.classList.add('open');
  const d=document.getElementById('detail'); d.hidden=false;
  document.getElementById('detail-title').textContent='Concept heatmap: '+h.key;
  const img=document.getElementById('heatmap');
  img.onload=()=>d.scrollIntoView({block:'start'});  // below the results: bring it into view once laid out
  img.src='/api/heatmap/'+h.row+'.png';
  d.scrollIntoView({block:'start'});
}
async function search(ev){
  if(ev) ev.preventDefault();
  const q=document.getElementById('q').value, err=document.getElementById('error'), res=document.getElementById('results');
  err.textContent=''; res.innerHTML=''; document.getElementById('summary').textContent='';
  document.getElementById('detail').hidden=true;
  history.replaceState(null,'',q.trim()?'?q='+encodeURIComponent(q):location.pathname);  // a linkable search
  const r=await fetch('/api/search?q='+encodeURIComponent(q)+'&top=__TOP__');
  const body=await r.json();
  if(!r.ok){err.textContent=body.error||('error '+r.status);return;}
  const qc=body.query_info.concepts;
  document.getElementById('summary').textContent=body.results.length+' results ('+body.mode+', K='+body.k+' of '+
    body.n_videos+' videos, '+body.timing_ms.total.toFixed(0)+' ms); query concepts: '+
    ([...qc.verb,...qc.noun].join(', ')||'none');
  body.results.forEach((h,i)=>{
    const div=document.createElement('div'); div.className='result'; div.dataset.row=h.row; div.dataset.key=h.key;
    const thumbs=h.thumbs.length?h.thumbs.map(t=>'<img src="/files/'+encodeURI(t)+'" alt="frame">').join(''):
      '<span class="nothumb">no thumbnails (source video not available)</span>';
    const bars=LEVELS.filter(l=>l[0] in h.levels).map(l=>{const v=h.levels[l[0]];
      return '<div class="barrow"><span class="barlabel">'+l[1]+'</span><span class="bartrack"><div class="bar" data-level="'+
      l[0]+'" style="width:'+Math.max(0,Math.min(1,v))*100+'%"></div></span><span>'+v.toFixed(3)+'</span></div>';}).join('');
    const shared=[...h.shared_concepts.verb,...h.shared_concepts.noun].map(c=>esc(c.concept)).join(', ')||'-';
    div.innerHTML='<div><div class="thumbs">'+thumbs+'</div><div class="meta"><span class="score">#'+(i+1)+
      ' score '+h.score.toFixed(4)+'</span> '+esc(h.key)+' ['+esc(h.split)+']</div><div class="meta">'+esc(h.caption)+
      '</div><div class="meta shared">shared concepts: '+shared+'</div></div><div class="bars">'+bars+'</div>';
    div.addEventListener('click',()=>openResult(div,h));
    res.appendChild(div);
  });
}
document.getElementById('f').addEventListener('submit',search);
const linked=new URLSearchParams(location.search).get('q');  // /?q=a+man+rides: run that search
if(linked){document.getElementById('q').value=linked; search();}
</script></body></html>"""


def _bad_parameter(request, exc):
    """HTTP 400 with one message naming the parameter, never the value echoed back (a query may be 10 KB)."""
    from fastapi.responses import JSONResponse

    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                         for e in exc.errors())
    return JSONResponse({"error": problems}, status_code=400)


def create_app(searcher: Searcher, default_top: int = DEFAULT_TOP):
    from fastapi import FastAPI, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    app = FastAPI(title="vtr search", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()  # torch inference + matplotlib: one request at a time
    heat_cache: dict[int, bytes] = {}
    meta = searcher.meta
    info = (f"{searcher.n} videos indexed from {html.escape(str(meta.get('shards_root')))} with "
            f"{html.escape(str(meta.get('checkpoint')))} (epoch {meta.get('checkpoint_epoch')})")
    levels = [[k, v] for k, v in LEVEL_NAMES.items()]
    page = (PAGE.replace("__INFO__", info).replace("__MAXLEN__", str(MAX_QUERY_CHARS))
            .replace("__LEVELS__", json.dumps(levels)).replace("__TOP__", str(int(default_top))))

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    app.add_exception_handler(RequestValidationError, _bad_parameter)

    @app.get("/api/search")
    def api_search(q: str = "", top: int = Query(default_top, ge=1, le=100),
                   k: int = Query(DEFAULT_K, ge=1, le=100_000), exhaustive: bool = False) -> Any:
        if len(q) > MAX_QUERY_CHARS:  # checked before any work, and the query is not echoed
            return JSONResponse({"error": f"query too long: {len(q)} characters, the limit is {MAX_QUERY_CHARS}"},
                                status_code=400)
        try:
            with lock:
                return searcher.search(q, top=top, k=k, exhaustive=exhaustive)
        except SearchError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/api/info")
    def api_info() -> dict:
        return {k: meta.get(k) for k in ("n_videos", "checkpoint", "checkpoint_epoch", "shards_root", "extractor",
                                         "splits", "vocabulary_fingerprint", "shards_fingerprint", "n_with_thumbnails")}

    @app.get("/api/heatmap/{row}.png")
    def api_heatmap(row: int) -> Response:
        if row not in heat_cache:
            with lock:
                png = searcher.heatmap_png(row)
            if png is None:
                return JSONResponse({"error": f"no heatmap for video row {row}"}, status_code=404)
            heat_cache[row] = png
        return Response(heat_cache[row], media_type="image/png")

    @app.get("/files/{rel:path}")
    def files(rel: str) -> Response:
        path = searcher.file_path(rel)
        if path is None or not path.is_file():
            return JSONResponse({"error": "not an index file"}, status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    return app


def serve(searcher: Searcher, host: str = "127.0.0.1", port: int = 8765, top: int = DEFAULT_TOP) -> None:
    import uvicorn

    print(f"vtr search on http://{host}:{port}  ({searcher.n} videos; Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(searcher, top), host=host, port=port, log_level="warning")
