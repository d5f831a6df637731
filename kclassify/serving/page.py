"""``GET /``: one small page to drop or pick an image and see the top classes as bars.

No build step and no external asset: the HTML, CSS and script are this string. The script posts
the file as it is (raw body, its own content type) to ``/v1/predict`` and draws the answer, then, when the
server can explain (a Keras model behind it), to ``/v1/explain`` and shows where the model looked; with
``--api-key`` the key typed into the page goes in the ``X-API-Key`` header.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>kclassify: __NAME__</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:720px;margin:32px auto;padding:0 16px;
color:#1d2733;background:#fafbfc}
h1{font-size:1.4em;margin-bottom:2px}.sub{color:#5b6b7c;font-size:.9em;margin-bottom:18px}
#drop{display:block;border:2px dashed #9aa8b7;border-radius:10px;padding:28px;text-align:center;background:#fff;cursor:pointer}
#drop.over{border-color:#2b6cb0;background:#eef5ff}.pictures{display:flex;gap:12px;margin-top:12px}
.pictures figure{margin:0}.pictures img{height:220px;max-width:100%;display:none;image-rendering:auto}
figcaption{color:#5b6b7c;font-size:.8em}
.row{display:flex;align-items:center;gap:10px;margin:6px 0}.name{width:180px;text-align:right;overflow-wrap:anywhere}
.bar{flex:1;background:#e6ebf0;border-radius:4px;height:18px;position:relative}
.fill{background:#2b6cb0;height:100%;border-radius:4px}.pct{width:64px;font-variant-numeric:tabular-nums}
#error{color:#b42318;margin-top:12px}#key{margin-top:12px;display:__KEY_DISPLAY__}
</style></head><body>
<h1>__NAME__</h1>
<div class="sub">__BACKEND__ model, __SIZE__ px, __CLASSES__ classes &middot; <a href="/docs">API</a></div>
<label id="drop">Drop an image here, or click to pick one
<input id="file" type="file" accept="image/*" hidden></label>
<div id="key"><label>API key <input id="apikey" type="password" autocomplete="off"></label></div>
<div class="pictures"><figure><img id="preview" alt="the image sent"></figure>
<figure><img id="heat" alt="where the model looked"><figcaption id="heatcaption"></figcaption></figure></div>
<div id="result" aria-live="polite"></div><div id="error"></div>
<script>
const drop = document.getElementById('drop'), input = document.getElementById('file');
const result = document.getElementById('result'), error = document.getElementById('error');
const preview = document.getElementById('preview'), heat = document.getElementById('heat');
const explains = __EXPLAIN__;
function text(tag, cls, value) { const e = document.createElement(tag); e.className = cls; e.textContent = value; return e; }
async function classify(file) {
  result.textContent = 'classifying...'; error.textContent = '';
  preview.src = URL.createObjectURL(file); preview.style.display = 'block'; heat.style.display = 'none';
  document.getElementById('heatcaption').textContent = '';
  const headers = {'Content-Type': file.type || 'application/octet-stream'};
  const key = document.getElementById('apikey').value;
  if (key) headers['X-API-Key'] = key;
  try {
    const response = await fetch('/v1/predict?top_k=5', {method: 'POST', body: file, headers});
    const body = await response.json();
    result.textContent = '';
    if (!response.ok) { error.textContent = body.error || ('HTTP ' + response.status); return; }
    for (const p of body.predictions) {
      const row = text('div', 'row', ''), bar = text('div', 'bar', ''), fill = text('div', 'fill', '');
      fill.style.width = (100 * p.score).toFixed(1) + '%'; bar.appendChild(fill);
      row.append(text('div', 'name', p.label), bar, text('div', 'pct', (100 * p.score).toFixed(1) + '%'));
      result.appendChild(row);
    }
    result.dataset.top = body.predictions[0].label;
    if (explains) await explain(file, headers);
  } catch (e) { result.textContent = ''; error.textContent = String(e); }
}
async function explain(file, headers) {
  const response = await fetch('/v1/explain', {method: 'POST', body: file, headers});
  if (!response.ok) return;
  heat.src = URL.createObjectURL(await response.blob()); heat.style.display = 'block';
  document.getElementById('heatcaption').textContent = 'where it looks for ' + response.headers.get('X-Class');
}
input.addEventListener('change', () => input.files[0] && classify(input.files[0]));
['dragenter', 'dragover'].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.add('over'); }));
['dragleave', 'drop'].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.remove('over'); }));
drop.addEventListener('drop', e => e.dataTransfer.files[0] && classify(e.dataTransfer.files[0]));
</script></body></html>
"""


def render_page(metadata: dict, api_key: bool) -> str:
    import html

    values = {"__NAME__": html.escape(metadata["model"]), "__BACKEND__": html.escape(metadata["backend"]),
              "__SIZE__": str(metadata["image_size"]), "__CLASSES__": str(len(metadata["labels"])),
              "__KEY_DISPLAY__": "block" if api_key else "none",
              "__EXPLAIN__": "true" if metadata.get("explain") else "false"}
    page = PAGE
    for key, value in values.items():
        page = page.replace(key, value)
    return page
