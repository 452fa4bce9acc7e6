"""The labeling page: one prompt and its K completions at a time, ranked by a person, each submission stored in
the label store (tasks/label/store.py) before the page moves on.

`make_app(store, on_label)` is a FastAPI app: GET / (the page), GET /api/me, GET /api/next, POST /api/submit,
/api/skip, /api/undo, GET /api/progress. Once anyone is invited (tasks/label/access.py) the store is closed: the
invite link (GET /?token=...) sets the token as an HttpOnly, SameSite=Strict cookie, every request's annotator is
the name that token was issued to (a name in the request is ignored), and a request without a valid token gets
401 and writes nothing. Before any invite (127.0.0.1 only: flows/label.py refuses other addresses) the person
types a name. `on_label()` runs after each stored label and progress read (the pipeline resumes a
paused run there; a failure in it never loses a label). Bodies are validated (pydantic: unknown fields and wrong
types refused); what the store refuses comes back as 400 {"error": one line}. Model outputs are untrusted text:
the page puts them into the document with `textContent` only, never as HTML.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from tasks.label import access
from tasks.label.store import LabelError, LabelStore

COOKIE = "rlhf_label_token"
SIGN_IN = "sign in first: open the invite link you were given (python -m flows.label invite NAME)"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotator: str = Field("", max_length=100)  # the typed name; ignored once the store is closed


class Submission(Body):
    task_id: int
    ranks: list[int] | None = None
    all_bad: bool = False


class Skip(Body):
    task_id: int


def task_view(task) -> dict | None:
    if task is None:
        return None
    prompt = (
        task.prompt if isinstance(task.prompt, str) else "\n".join(f"{m['role']}: {m['content']}" for m in task.prompt)
    )
    return {"id": task.id, "round": task.round, "prompt": prompt, "completions": [c["text"] for c in task.completions]}


def make_app(store: LabelStore, on_label=lambda: None) -> FastAPI:
    app = FastAPI(title="rlhf-pipeline labeling", docs_url=None, redoc_url=None)

    def after_label() -> None:
        try:
            on_label()
        except Exception as e:  # the label is committed already; say why the hook failed and carry on
            print(f"labeling page: after the label: {type(e).__name__}: {e}")

    def refused(e: LabelError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=400)

    def caller(request: Request, claimed: str) -> str | None:
        """Who is asking: the token's name when the store is closed (None: no valid token), else the typed name."""
        return access.who(store, request.cookies.get(COOKIE)) if access.closed(store) else claimed

    def unsigned() -> JSONResponse:
        return JSONResponse({"error": SIGN_IN}, status_code=401)

    @app.get("/", response_class=HTMLResponse)
    def page(token: str | None = None):
        if token is None:
            return PAGE
        if access.who(store, token) is None:
            return HTMLResponse("This invite link is not valid (revoked or mistyped).", status_code=401)
        response = RedirectResponse("/", status_code=303)  # the token leaves the address bar and the history
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=90 * 24 * 3600)
        return response

    @app.get("/api/me")
    def me(request: Request) -> dict:
        closed = access.closed(store)
        return {"closed": closed, "name": caller(request, "") if closed else None}

    @app.get("/api/progress")
    def progress() -> dict:
        after_label()
        return store.progress()

    @app.get("/api/next")
    def next_task(request: Request, annotator: str = ""):
        if (name := caller(request, annotator)) is None:
            return unsigned()
        try:
            return {"task": task_view(store.next_task(name)), "progress": store.progress()}
        except LabelError as e:
            return refused(e)

    @app.post("/api/submit")
    def submit(request: Request, body: Submission):
        if (name := caller(request, body.annotator)) is None:
            return unsigned()
        try:
            label = store.submit(body.task_id, name, ranks=body.ranks, all_bad=body.all_bad)
        except LabelError as e:
            return refused(e)
        after_label()
        return {"label_id": label, "progress": store.progress()}

    @app.post("/api/skip")
    def skip(request: Request, body: Skip):
        if (name := caller(request, body.annotator)) is None:
            return unsigned()
        try:
            store.skip(body.task_id, name)
        except LabelError as e:
            return refused(e)
        return {"ok": True}

    @app.post("/api/undo")
    def undo(request: Request, body: Body):
        if (name := caller(request, body.annotator)) is None:
            return unsigned()
        try:
            return {"label_id": store.undo_last(name)}
        except LabelError as e:
            return refused(e)

    return app


# The page. Keys: 1..K give the next rank to that completion ("=" first: the same rank as the previous one, a
# tie), Backspace clears, Enter submits, b all bad, s skip, u undo the last submission.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rank the completions</title>
<style>
 body{font:16px system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
 .prompt{background:#f3f3f3;padding:.8em;white-space:pre-wrap}
 .completion{border:1px solid #ccc;margin:.5em 0;padding:.6em;display:flex;gap:1em;align-items:flex-start}
 .completion .text{white-space:pre-wrap;flex:1} .key{font-weight:bold;color:#555}
 #status{color:#a00} #progress{color:#555} button{margin-right:.5em}
</style></head><body>
<h1>Rank the completions</h1>
<p><span id="typed"><label>Your name <input id="annotator" autocomplete="name"></label></span>
 <span id="signed" hidden></span> <button id="start">Start</button> <span id="progress"></span></p>
<p id="help">Keys: <b>1</b>&ndash;<b>K</b> give the next rank (best first), <b>=</b> then a number: same rank
 as the previous (a tie), <b>Backspace</b> clears, <b>Enter</b> submits, <b>b</b> all bad, <b>s</b> skip,
 <b>u</b> undo the last submission.</p>
<div id="task" hidden>
 <p id="round"></p>
 <div class="prompt" id="prompt"></div>
 <div id="completions"></div>
 <p><button id="submit">Submit (Enter)</button><button id="allbad">All bad (b)</button>
 <button id="skip">Skip (s)</button><button id="undo">Undo last (u)</button><button id="clear">Clear</button></p>
</div>
<p id="done" hidden>Nothing left to label for you. Thank you.</p>
<p id="status" role="status"></p>
<script>
let task = null, order = [], tie = false, signedIn = null;
const $ = id => document.getElementById(id);
const who = () => signedIn || $("annotator").value.trim();
function say(text) { $("status").textContent = text || ""; }
async function call(path, body) {
  const r = await fetch(path, body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) { throw new Error(data.error || JSON.stringify(data.detail || data)); }
  return data;
}
function ranks() {
  if (!task) return [];
  const out = task.completions.map(() => null);
  order.forEach(([i, r]) => { out[i] = r; });
  return out;
}
function render() {
  const r = ranks();
  task.completions.forEach((_, i) => {
    $("rank-" + i).value = r[i] === null ? "" : String(r[i]);
  });
}
function show(data) {
  task = data.task; order = []; tie = false;
  const p = data.progress;
  $("progress").textContent = p ? `labeled ${p.labeled} / ${p.total}` : "";
  $("task").hidden = !task; $("done").hidden = !!task;
  if (!task) return;
  $("task").dataset.taskId = task.id;
  $("prompt").textContent = task.prompt;
  $("round").textContent = `Round ${task.round}`;  // iterated RLHF: whose completions these are
  const box = $("completions"); box.replaceChildren();
  task.completions.forEach((text, i) => {
    const row = document.createElement("div"); row.className = "completion"; row.id = "completion-" + i;
    const key = document.createElement("span"); key.className = "key"; key.textContent = String(i + 1);
    const sel = document.createElement("select"); sel.id = "rank-" + i; sel.title = "rank (1 = best)";
    const none = document.createElement("option"); none.value = ""; none.textContent = "rank"; sel.append(none);
    task.completions.forEach((__, r) => {
      const o = document.createElement("option"); o.value = String(r + 1); o.textContent = String(r + 1); sel.append(o);
    });
    sel.addEventListener("change", () => {
      order = order.filter(([j]) => j !== i);
      if (sel.value) order.push([i, Number(sel.value)]);
    });
    const body = document.createElement("div"); body.className = "text"; body.textContent = text;
    row.append(key, sel, body); box.append(row);
  });
}
async function next() {
  if (!who()) { say("Type your name first."); return; }
  try { show(await call("/api/next?annotator=" + encodeURIComponent(who()))); say(""); }
  catch (e) { say(e.message); }
}
function pick(i) {
  if (!task || i >= task.completions.length || order.some(([j]) => j === i)) return;
  const last = order.length ? order[order.length - 1][1] : 0;
  order.push([i, tie && order.length ? last : order.length ? Math.max(...order.map(x => x[1])) + 1 : 1]);
  tie = false; render();
}
async function act(path, body, then) {
  try { await call(path, body); say(""); await then(); } catch (e) { say(e.message); }
}
function submit() {
  const r = ranks();
  if (r.some(x => x === null)) { say("Rank every completion (or mark them all bad)."); return; }
  act("/api/submit", {task_id: task.id, annotator: who(), ranks: r}, next);
}
fetch("/api/me").then(r => r.json()).then(me => {
  if (!me.closed) return;
  $("typed").hidden = true; $("signed").hidden = false;
  signedIn = me.name;
  $("signed").textContent = me.name ? "Signed in as " + me.name : "Open your invite link to sign in.";
  if (!me.name) $("start").disabled = true;
});
$("start").addEventListener("click", next);
$("submit").addEventListener("click", submit);
$("allbad").addEventListener("click",
  () => act("/api/submit", {task_id: task.id, annotator: who(), all_bad: true}, next));
$("skip").addEventListener("click", () => act("/api/skip", {task_id: task.id, annotator: who()}, next));
$("undo").addEventListener("click", () => act("/api/undo", {annotator: who()}, next));
$("clear").addEventListener("click", () => { order = []; render(); });
document.addEventListener("keydown", ev => {
  if (ev.target === $("annotator")) { if (ev.key === "Enter") next(); return; }
  if (!task) return;
  if (/^[1-9]$/.test(ev.key)) pick(Number(ev.key) - 1);
  else if (ev.key === "=") tie = true;
  else if (ev.key === "Backspace") { order = []; render(); }
  else if (ev.key === "Enter") submit();
  else if (ev.key === "b") $("allbad").click();
  else if (ev.key === "s") $("skip").click();
  else if (ev.key === "u") $("undo").click();
  else return;
  ev.preventDefault();
});
</script></body></html>
"""
