/* Chatgate dashboard: plain JavaScript, no build step, no dependencies.
 *
 * Sign in with the admin (master) key: it is kept in sessionStorage (gone when the tab
 * closes) and sent as a bearer to /admin/*. Pages are hash routes (#/overview, #/keys,
 * #/models, #/requests, #/requests/<id>, #/playground). Every element is built with DOM
 * calls (never innerHTML with data), charts are SVG drawn here. A key's secret is shown
 * once, when it is created or rotated; it is kept in memory only (for the playground) and
 * never written into the page afterwards.
 */
'use strict';
(() => {
  const ADMIN_KEY = 'chatgate.admin';
  const SVG = 'http://www.w3.org/2000/svg';
  const state = {
    admin: sessionStorage.getItem(ADMIN_KEY),
    meta: null,
    range: '24h',
    render: 0, // bumped by each navigation: a slow page does not draw over the next one
    lastPage: '',
    secrets: new Map(), // key id -> {name, secret}: keys created or rotated in this tab
    cursors: [], // request log: the cursors of the pages before this one
    chat: { messages: [], busy: null, keyId: 'admin', pasted: '', model: '', system: '' },
  };

  // --- DOM ----------------------------------------------------------------------------

  const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'textContent']);

  function h(tag, props, ...kids) {
    const svg = tag.startsWith('svg:');
    const el = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (PROPS.has(k)) el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const $ = (sel, root = document) => root.querySelector(sel);

  // --- formatting ---------------------------------------------------------------------

  const nf = new Intl.NumberFormat('en-US');
  const int = (v) => (v === null || v === undefined ? '—' : nf.format(v));
  function compact(v) {
    if (v === null || v === undefined) return '—';
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1).replace(/\.0$/, '') + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, '') + 'M';
    if (a >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, '') + 'k';
    return String(Math.round(v * 100) / 100);
  }
  function usd(v) {
    if (v === null || v === undefined) return '—';
    if (v === 0) return '$0';
    if (Math.abs(v) < 0.01) return '$' + v.toFixed(6).replace(/0+$/, '');
    return '$' + v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function ms(v) {
    if (v === null || v === undefined) return '—';
    return v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms';
  }
  const pct = (v) => (v === null || v === undefined ? '—' : (v * 100).toFixed(v < 0.1 ? 2 : 1) + '%');
  const pad = (n) => String(n).padStart(2, '0');
  function when(t) {
    if (!t) return '—';
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  /* today: the time; before: the day and minute (the full time is in the title) */
  function shortWhen(t) {
    const d = new Date(t * 1000);
    const now = new Date();
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return clock;
    return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock.slice(0, 5)}`;
  }
  function bucketLabel(t, bucket) {
    const d = new Date(t * 1000);
    const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
    if (bucket >= 86400) return `${months[d.getUTCMonth()]} ${d.getUTCDate()}`; // UTC days
    return `${pad(d.getHours())}:00`;
  }
  function statusBadge(status) {
    const cls = status < 400 ? 'ok' : status === 429 || status === 499 ? 'warn' : 'bad';
    return h('span', { class: 'badge ' + cls }, status);
  }

  // --- the API ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: 'Bearer ' + state.admin } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, 'The gateway cannot be reached (' + err.message + ').');
    }
    let data = null;
    try {
      data = await r.json();
    } catch (err) {
      data = null;
    }
    if (!r.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(r.status, e.message || `HTTP ${r.status}`, e.code);
    }
    return data;
  }

  // --- sign-in ------------------------------------------------------------------------

  function signInMessage(err) {
    if (err.status === 401) return "That is not this gateway's admin key (its master_key).";
    if (err.status === 403) return 'The admin API is disabled on this gateway: set master_key to enable it.';
    return err.message;
  }

  function renderSignIn(message) {
    const input = h('input', {
      id: 'admin-key', name: 'admin-key', type: 'password', required: true,
      autocomplete: 'current-password', placeholder: 'the master key', 'aria-describedby': 'signin-error',
    });
    const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' }, message || '');
    const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
    const form = h('form', {
      class: 'card signin-card',
      onsubmit: async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        error.textContent = '';
        state.admin = input.value.trim();
        try {
          state.meta = await api('GET', '/admin/dashboard/meta');
          sessionStorage.setItem(ADMIN_KEY, state.admin);
          state.chat.keyId = 'admin';
          if (!location.hash || location.hash === '#/') location.hash = '#/overview';
          shell();
          route();
        } catch (err) {
          state.admin = null;
          error.textContent = signInMessage(err);
          button.disabled = false;
          input.select();
        }
      },
    },
    h('div', { class: 'brand' }, 'Chatgate'),
    h('p', { class: 'muted' }, 'Sign in with the gateway’s admin key (master_key). It stays in this tab only.'),
    h('div', { class: 'field' }, h('label', { for: 'admin-key' }, 'Admin key'), input),
    button, error);
    document.getElementById('app').replaceChildren(h('main', { class: 'signin' }, form));
    input.focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(ADMIN_KEY);
    state.admin = null;
    state.meta = null;
    state.secrets.clear();
    state.chat.messages = [];
    renderSignIn(message);
  }

  // --- the shell and the router -------------------------------------------------------

  const PAGES = [
    ['overview', 'Overview'],
    ['keys', 'Keys'],
    ['models', 'Models'],
    ['requests', 'Requests'],
    ['playground', 'Playground'],
  ];

  function shell() {
    const nav = h('nav', { id: 'nav', class: 'nav', 'aria-label': 'Pages' },
      PAGES.map(([id, label]) => h('a', { href: '#/' + id, 'data-page': id }, label)),
      h('div', { class: 'grow' }),
      h('button', { type: 'button', id: 'signout', onclick: () => signOut('Signed out.') }, 'Sign out'));
    const toggle = h('button', {
      type: 'button', class: 'nav-toggle', 'aria-controls': 'nav', 'aria-expanded': 'false', 'aria-label': 'Menu',
      onclick: () => {
        const open = nav.classList.toggle('open');
        toggle.setAttribute('aria-expanded', String(open));
      },
    }, '☰');
    const version = state.meta ? 'v' + state.meta.version : '';
    document.getElementById('app').replaceChildren(
      h('header', { class: 'topbar' }, toggle, h('a', { class: 'brand', href: '#/overview' }, 'Chatgate'),
        h('span', { class: 'spacer' }), h('span', { class: 'muted', id: 'version' }, version)),
      h('div', { class: 'layout' }, nav, h('main', { id: 'main', class: 'main' })));
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, params: new URLSearchParams(query || '') };
  }

  async function route() {
    if (!state.admin) return renderSignIn();
    if (!$('#main')) shell();
    const { parts, params } = parseHash();
    const page = PAGES.some(([id]) => id === parts[0]) ? parts[0] : 'overview';
    for (const a of document.querySelectorAll('.nav a')) a.classList.toggle('active', a.dataset.page === page);
    const nav = $('#nav');
    nav.classList.remove('open');
    $('.nav-toggle').setAttribute('aria-expanded', 'false');
    const main = $('#main');
    const token = ++state.render;
    const stale = () => token !== state.render;
    main.setAttribute('aria-busy', 'true');
    try {
      if (!state.meta) state.meta = await api('GET', '/admin/dashboard/meta');
      $('#version').textContent = 'v' + state.meta.version;
      const view = {
        overview: pageOverview, keys: pageKeys, models: pageModels,
        requests: parts[1] ? pageRequest : pageRequests, playground: pagePlayground,
      }[page];
      const content = await view(parts.slice(1), params, stale);
      if (stale()) return;
      main.replaceChildren(content);
      const where = location.hash.split('?')[0];
      if (where !== state.lastPage) window.scrollTo(0, 0);
      state.lastPage = where;
      document.title = `${PAGES.find(([id]) => id === page)[1]} · Chatgate`;
    } catch (err) {
      if (stale()) return;
      if (err.status === 401 || err.status === 403) return signOut(signInMessage(err));
      main.replaceChildren(h('div', { class: 'notice bad', role: 'alert' }, err.message));
    } finally {
      if (!stale()) main.removeAttribute('aria-busy');
    }
  }

  function pageHead(title, ...extra) {
    return h('div', { class: 'page-head' }, h('h1', null, title), h('span', { class: 'spacer' }), extra);
  }
  const panel = (title, ...body) => h('section', { class: 'panel' }, title ? h('h2', null, title) : null, body);
  function stat(label, value, sub, id) {
    return h('div', { class: 'stat', 'data-stat': id }, h('div', { class: 'label' }, label),
      h('div', { class: 'value' }, value), sub ? h('div', { class: 'sub' }, sub) : null);
  }
  function table(head, rows, opts = {}) {
    return h('div', { class: 'table-wrap' }, h('table', { class: opts.class },
      h('thead', null, h('tr', null, head.map(([label, cls]) => h('th', { class: cls }, label)))),
      h('tbody', null, rows.length ? rows
        : h('tr', null, h('td', { colspan: head.length, class: 'empty' }, opts.empty || 'Nothing here yet.')))));
  }
  const td = (value, cls) => h('td', { class: cls }, value);

  // --- charts (SVG) -------------------------------------------------------------------

  function chartWidth() {
    const w = window.innerWidth;
    const main = w > 760 ? w - 208 - 56 : w - 40;
    return Math.round(Math.max(300, Math.min(760, w > 1100 ? main / 2 - 36 : main - 36)));
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  /* series: [{name, values, cls}]; kind: "bars" (stacked) or "lines" */
  function chart({ t, bucket, series, kind, fmt = compact, height = 190 }) {
    const W = chartWidth();
    const H = height;
    const L = 52, R = 8, T = 8, B = 24;
    const n = t.length;
    const band = (W - L - R) / Math.max(n, 1);
    let top = 0;
    for (let i = 0; i < n; i++) {
      if (kind === 'bars') top = Math.max(top, series.reduce((s, x) => s + (x.values[i] || 0), 0));
      else for (const x of series) top = Math.max(top, x.values[i] || 0);
    }
    const max = niceMax(top);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': series.map((s) => s.name).join(', ') });
    for (const f of [0, 0.5, 1]) {
      svg.append(h('svg:line', { class: 'grid', x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
      svg.append(h('svg:text', { class: 'axis', x: L - 6, y: y(max * f) + 4, 'text-anchor': 'end' }, fmt(max * f)));
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor((W - L) / 70))));
    for (let i = 0; i < n; i += every) {
      svg.append(h('svg:text', { class: 'axis', x: L + band * (i + 0.5), y: H - 6, 'text-anchor': 'middle' }, bucketLabel(t[i], bucket)));
    }
    if (kind === 'bars') {
      const w = Math.max(1, band * 0.78);
      for (let i = 0; i < n; i++) {
        let acc = 0;
        for (const s of series) {
          const v = s.values[i] || 0;
          if (!v) continue;
          const y0 = y(acc), y1 = y(acc + v);
          svg.append(h('svg:rect', { class: s.cls, x: L + band * i + (band - w) / 2, y: y1, width: w, height: Math.max(0.5, y0 - y1) }));
          acc += v;
        }
      }
    } else {
      for (const s of series) {
        let d = '';
        let pen = false;
        for (let i = 0; i < n; i++) {
          const v = s.values[i];
          if (v === null || v === undefined) { pen = false; continue; }
          d += `${pen ? 'L' : 'M'}${(L + band * (i + 0.5)).toFixed(1)},${y(v).toFixed(1)}`;
          pen = true;
        }
        if (d) svg.append(h('svg:path', { class: 'line ' + s.cls, d }));
        if (n <= 40) {
          for (let i = 0; i < n; i++) {
            const v = s.values[i];
            if (v !== null && v !== undefined) svg.append(h('svg:circle', { class: 'dot ' + s.cls, cx: L + band * (i + 0.5), cy: y(v), r: 2.5 }));
          }
        }
      }
    }
    // one hover target per bucket, titled with every series' value
    for (let i = 0; i < n; i++) {
      const lines = series.map((s) => `${s.name}: ${fmt(s.values[i])}`);
      svg.append(h('svg:rect', { class: 'hit', x: L + band * i, y: T, width: band, height: H - T - B },
        h('svg:title', null, `${bucket >= 86400 ? bucketLabel(t[i], bucket) + ' (UTC)' : when(t[i])}\n${lines.join('\n')}`)));
    }
    const legend = h('div', { class: 'legend' }, series.map((s) => h('span', null, h('i', { class: s.cls }), s.name)));
    return h('div', { class: 'chart' }, svg, legend);
  }

  function shareCell(value, max) {
    const bar = h('span');
    bar.style.width = (max ? Math.max(2, (100 * value) / max) : 0) + '%';
    return h('td', { class: 'share' }, bar);
  }

  // --- overview -----------------------------------------------------------------------

  async function pageOverview() {
    const d = await api('GET', '/admin/dashboard/overview?range=' + encodeURIComponent(state.range));
    const t = d.totals;
    const s = d.series;
    const picker = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Range' },
      state.meta.ranges.map((r) => h('button', {
        type: 'button', class: r === state.range ? 'on' : null, 'aria-pressed': String(r === state.range),
        onclick: () => { state.range = r; route(); },
      }, r)));
    const ctx = { t: s.t, bucket: d.bucket };
    const byModel = d.by_model_series.map((m, i) => ({ name: m.model, values: m.requests, cls: 's' + (i % 7) }));
    const maxModel = Math.max(0, ...d.by_model.map((r) => r.requests));
    const maxKey = Math.max(0, ...d.by_key.map((r) => r.requests));
    const bucketName = d.bucket >= 86400 ? 'day (UTC)' : 'hour';
    return h('div', null,
      pageHead('Overview', picker),
      h('section', { class: 'cards' },
        stat('Requests', int(t.requests), `last ${state.range}, per ${bucketName}`, 'requests'),
        stat('Error rate', pct(t.error_rate), `${int(t.errors)} error${t.errors === 1 ? '' : 's'}`, 'error_rate'),
        stat('Tokens in / out', `${compact(t.prompt_tokens)} / ${compact(t.completion_tokens)}`, null, 'tokens'),
        stat('Cost', usd(t.cost_usd), null, 'cost'),
        stat('Latency p50', ms(t.p50_ms), 'successful requests', 'p50'),
        stat('Latency p95', ms(t.p95_ms), { histogram: d.bucket === 3600 ? 'successful; hourly histogram' : 'successful; daily histogram' }[d.latency_source] || 'successful requests', 'p95')),
      h('div', { class: 'grid2' },
        panel('Requests by model', chart({ ...ctx, kind: 'bars', series: byModel })),
        panel('Error rate', chart({ ...ctx, kind: 'lines', fmt: pct, series: [{ name: 'errors / requests', values: s.error_rate, cls: 's5' }] })),
        panel('Latency', chart({ ...ctx, kind: 'lines', fmt: ms, series: [
          { name: 'p50', values: s.p50_ms, cls: 's0' }, { name: 'p95', values: s.p95_ms, cls: 's1' }] })),
        panel('Tokens', chart({ ...ctx, kind: 'bars', series: [
          { name: 'in (prompt)', values: s.prompt_tokens, cls: 's2' }, { name: 'out (completion)', values: s.completion_tokens, cls: 's3' }] })),
        panel('Cost', chart({ ...ctx, kind: 'bars', fmt: usd, series: [{ name: 'USD', values: s.cost_usd, cls: 's4' }] })),
        panel('Errors', chart({ ...ctx, kind: 'bars', series: [{ name: 'failed requests', values: s.errors, cls: 's5' }] }))),
      h('div', { class: 'grid2' },
        panel('By model', table(
          [['Model'], ['', 'opt'], ['Requests', 'num'], ['Errors', 'num'], ['Tokens in/out', 'num opt'], ['Cost', 'num'], ['Avg latency', 'num opt']],
          d.by_model.map((r) => h('tr', { class: 'click', onclick: () => { location.hash = '#/requests?model=' + encodeURIComponent(r.model); } },
            td(r.model), shareCell(r.requests, maxModel), td(int(r.requests), 'num'), td(pct(r.requests ? r.errors / r.requests : 0), 'num'),
            td(`${compact(r.prompt_tokens)} / ${compact(r.completion_tokens)}`, 'num opt'), td(usd(r.cost_usd), 'num'), td(ms(r.avg_latency_ms), 'num opt'))),
          { empty: 'No requests in this range.' })),
        panel('By key', table(
          [['Key'], ['', 'opt'], ['Requests', 'num'], ['Errors', 'num'], ['Tokens in/out', 'num opt'], ['Cost', 'num']],
          d.by_key.map((r) => h('tr', { class: r.key ? 'click' : null, onclick: r.key ? () => { location.hash = '#/requests?key=' + encodeURIComponent(r.key); } : null },
            td(r.name), shareCell(r.requests, maxKey), td(int(r.requests), 'num'), td(pct(r.requests ? r.errors / r.requests : 0), 'num'),
            td(`${compact(r.prompt_tokens)} / ${compact(r.completion_tokens)}`, 'num opt'), td(usd(r.cost_usd), 'num'))),
          { empty: 'No requests in this range.' }))));
  }

  // --- keys ---------------------------------------------------------------------------

  function secretPanel(name, secret, verb) {
    const code = h('code', { class: 'mono', 'data-secret': '' }, secret);
    const copy = h('button', {
      type: 'button', class: 'primary',
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(secret);
          copy.textContent = 'Copied';
        } catch (err) {
          const range = document.createRange();
          range.selectNodeContents(code);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
          copy.textContent = 'Selected: press Ctrl+C';
        }
      },
    }, 'Copy');
    const box = h('section', { class: 'panel secret', role: 'status', id: 'secret-panel' },
      h('h2', null, `Secret of “${name}” ${verb}`),
      h('p', null, 'Copy it now: it is shown only this once. Only its hash is stored.'),
      h('div', { class: 'value' }, code, copy),
      h('div', { class: 'actions' },
        h('a', { class: 'button', href: '#/playground' }, 'Try it in the playground'),
        h('button', { type: 'button', onclick: () => box.remove() }, 'Done, hide it')));
    return box;
  }

  function toEpoch(local) {
    return local ? Math.floor(new Date(local).getTime() / 1000) : null;
  }
  function toLocal(epoch) {
    if (!epoch) return '';
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  /* the policy form: create (no key) or edit (a key from the list) */
  function keyForm(key, onDone) {
    const v = key || {};
    const f = (name, label, input, cls) => h('div', { class: 'field ' + (cls || '') }, h('label', { for: `kf-${name}` }, label), input);
    const num = (name, value, step) => h('input', { id: `kf-${name}`, name, type: 'number', min: step ? '0' : '1', step: step || '1', value: value ?? '', placeholder: 'unlimited' });
    const models = h('input', { id: 'kf-models', name: 'models', value: (v.models || []).join(', '), placeholder: 'all models (or e.g. gpt-5*, claude-sonnet-4-6)' });
    const chips = h('div', { class: 'chips' }, state.meta.models.map((m) => h('button', {
      type: 'button', onclick: () => {
        const have = models.value.split(',').map((x) => x.trim()).filter(Boolean);
        if (!have.includes(m)) models.value = [...have, m].join(', ');
      },
    }, m)));
    const period = h('select', { id: 'kf-budget_period', name: 'budget_period' },
      ['total', 'daily', 'monthly'].map((p) => h('option', { value: p, selected: (v.budget_period || 'total') === p }, p)));
    const enabled = h('input', { id: 'kf-enabled', name: 'enabled', type: 'checkbox', checked: key ? v.enabled : true });
    const error = h('p', { class: 'error', role: 'alert' });
    const submit = h('button', { type: 'submit', class: 'primary' }, key ? 'Save limits' : 'Create key');
    const form = h('form', {
      class: 'stack', 'data-form': key ? 'edit' : 'create',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const data = new FormData(form);
        const numOrNull = (k) => (data.get(k) === '' ? null : Number(data.get(k)));
        const list = String(data.get('models')).split(',').map((x) => x.trim()).filter(Boolean);
        const body = {
          name: String(data.get('name')).trim(),
          owner: String(data.get('owner')).trim() || null,
          models: list.length ? list : null,
          rpm: numOrNull('rpm'), tpm: numOrNull('tpm'), max_concurrency: numOrNull('max_concurrency'),
          budget_usd: numOrNull('budget_usd'), budget_period: data.get('budget_period'),
          expires: toEpoch(data.get('expires')),
        };
        if (key) body.enabled = enabled.checked;
        submit.disabled = true;
        error.textContent = '';
        try {
          const res = key ? await api('PATCH', '/admin/keys/' + encodeURIComponent(key.id), body) : await api('POST', '/admin/keys', body);
          await onDone(res);
        } catch (err) {
          error.textContent = err.message;
          submit.disabled = false;
        }
      },
    },
    h('div', { class: 'form-grid' },
      f('name', 'Name', h('input', { id: 'kf-name', name: 'name', required: true, maxlength: 200, value: v.name || '' })),
      f('owner', 'Owner (team or user)', h('input', { id: 'kf-owner', name: 'owner', maxlength: 200, value: v.owner || '' })),
      f('models', 'Models', h('div', null, models, chips), 'wide'),
      f('rpm', 'Requests / minute', num('rpm', v.rpm)),
      f('tpm', 'Tokens / minute', num('tpm', v.tpm)),
      f('max_concurrency', 'Concurrent requests', num('max_concurrency', v.max_concurrency)),
      f('budget_usd', 'Budget (USD)', num('budget_usd', v.budget_usd, '0.01')),
      f('budget_period', 'Budget period', period),
      f('expires', 'Expires', h('input', { id: 'kf-expires', name: 'expires', type: 'datetime-local', value: toLocal(v.expires) })),
      key ? h('div', { class: 'field' }, h('label', null, 'State'), h('label', { class: 'check', for: 'kf-enabled' }, enabled, 'enabled')) : null),
    h('div', { class: 'actions' }, submit, h('button', { type: 'button', onclick: () => onDone(null) }, 'Cancel')),
    error);
    return form;
  }

  function statusOf(k) {
    const cls = { active: 'ok', disabled: 'warn', expired: 'warn', revoked: 'off' }[k.status] || 'off';
    return h('span', { class: 'badge ' + cls }, k.status);
  }

  /* a button that asks for a second click before it acts */
  function armedButton(label, confirmLabel, action) {
    let timer = null;
    const b = h('button', {
      type: 'button', class: 'danger small',
      onclick: async () => {
        if (!b.classList.contains('armed')) {
          b.classList.add('armed');
          b.textContent = confirmLabel;
          timer = setTimeout(() => { b.classList.remove('armed'); b.textContent = label; }, 5000);
          return;
        }
        clearTimeout(timer);
        b.disabled = true;
        try {
          await action();
        } catch (err) {
          b.classList.remove('armed');
          b.textContent = 'Failed: ' + err.message;
        }
      },
    }, label);
    return b;
  }

  async function pageKeys(_parts, params) {
    const withRevoked = params.get('revoked') === '1';
    const res = await api('GET', '/admin/dashboard/keys' + (withRevoked ? '?revoked=1' : ''));
    const top = h('div', { class: 'stack keys-top' });
    const showSecret = (name, secret, verb) => {
      top.replaceChildren(secretPanel(name, secret, verb));
      top.scrollIntoView({ block: 'start' });
    };
    const newButton = h('button', {
      type: 'button', class: 'primary', id: 'new-key',
      onclick: () => {
        top.replaceChildren(panel('New key', keyForm(null, async (created) => {
          if (!created) return top.replaceChildren();
          state.secrets.set(created.id, { name: created.name, secret: created.key });
          state.chat.keyId = created.id;
          await refresh();
          showSecret(created.name, created.key, 'created');
        })));
        $('#kf-name', top).focus();
      },
    }, 'New key');
    const list = h('div', { class: 'keys' });
    const draw = (keys) => {
      list.replaceChildren(...(keys.length ? keys.map((k) => keyCard(k)) : [h('p', { class: 'empty' }, 'No active keys: create one.')]));
    };
    const refresh = async () => {
      const [list, meta] = await Promise.all([
        api('GET', '/admin/dashboard/keys' + (withRevoked ? '?revoked=1' : '')),
        api('GET', '/admin/dashboard/meta'), // the request log's key filter
      ]);
      state.meta = meta;
      draw(list.data);
    };

    function keyCard(k) {
      const card = h('article', { class: 'card key-card', 'data-key-id': k.id });
      const limits = [k.rpm && `${int(k.rpm)} rpm`, k.tpm && `${int(k.tpm)} tpm`, k.max_concurrency && `${k.max_concurrency} at once`].filter(Boolean);
      let budget = 'none';
      let meter = null;
      if (k.budget_usd !== null) {
        budget = `${usd(k.spent_usd)} of ${usd(k.budget_usd)} (${k.budget_period})`;
        const share = k.budget_usd > 0 ? Math.min(1, k.spent_usd / k.budget_usd) : 1;
        const fill = h('span', { class: share > 0.85 ? 'high' : null });
        fill.style.width = (share * 100).toFixed(1) + '%';
        meter = h('div', { class: 'meter', title: pct(share) + ' spent' }, fill);
      }
      const view = () => card.replaceChildren(
        h('div', { class: 'title' }, h('strong', null, k.name), statusOf(k)),
        h('dl', { class: 'kv' },
          h('dt', null, 'id'), h('dd', { class: 'mono' }, k.id),
          h('dt', null, 'prefix'), h('dd', { class: 'mono' }, k.prefix + '…'),
          k.owner ? [h('dt', null, 'owner'), h('dd', null, k.owner)] : null,
          h('dt', null, 'models'), h('dd', null, k.models ? k.models.join(', ') : 'all'),
          h('dt', null, 'limits'), h('dd', null, limits.length ? limits.join(' · ') : 'none'),
          h('dt', null, 'budget'), h('dd', null, budget, meter),
          h('dt', null, 'expires'), h('dd', null, k.expires ? when(k.expires) : 'never'),
          h('dt', null, '30 days'), h('dd', null, `${int(k.requests_30d)} requests · ${usd(k.cost_usd_30d)}`),
          h('dt', null, 'created'), h('dd', null, when(k.created))),
        k.status === 'revoked' ? null : h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'small', 'data-action': 'edit', onclick: edit }, 'Edit limits'),
          h('a', { class: 'button small', href: '#/requests?key=' + encodeURIComponent(k.id) }, 'Requests'),
          armedButton('Rotate', 'Click again: new secret', async () => {
            const r = await api('POST', `/admin/keys/${encodeURIComponent(k.id)}/rotate`);
            state.secrets.set(k.id, { name: k.name, secret: r.key });
            await refresh();
            showSecret(k.name, r.key, 'rotated');
          }),
          armedButton('Revoke', 'Click again to revoke', async () => {
            await api('DELETE', '/admin/keys/' + encodeURIComponent(k.id));
            state.secrets.delete(k.id);
            await refresh();
          })));
      const edit = () => card.replaceChildren(h('h2', null, `Edit “${k.name}”`), keyForm(k, async (saved) => {
        if (saved) await refresh();
        else view();
      }));
      view();
      return card;
    }

    draw(res.data);
    return h('div', null,
      pageHead('Keys',
        h('label', { class: 'check' }, h('input', {
          type: 'checkbox', checked: withRevoked,
          onchange: (ev) => { location.hash = ev.target.checked ? '#/keys?revoked=1' : '#/keys'; },
        }), 'show revoked'),
        newButton),
      top, list);
  }

  // --- models & deployments -----------------------------------------------------------

  function stateBadge(s) {
    const cls = { closed: 'ok', half_open: 'warn', cooling: 'warn', open: 'bad' }[s] || 'off';
    const label = { closed: 'healthy', half_open: 'probing', cooling: 'cooling', open: 'circuit open' }[s] || s;
    return h('span', { class: 'badge ' + cls, title: `circuit ${s}` }, label);
  }

  async function pageModels() {
    const d = await api('GET', '/admin/dashboard/deployments');
    const usage = new Map(d.usage_24h.map((u) => [`${u.model}\u0000${u.provider}`, u]));
    const open = d.deployments.filter((x) => x.state !== 'closed').length;
    const models = new Set(d.deployments.map((x) => x.model));
    const rows = d.deployments.map((x) => {
      const u = usage.get(`${x.model}\u0000${x.provider}`) || { requests: 0, errors: 0, last_error: null };
      return h('tr', { 'data-deployment': x.deployment },
        td(h('a', { href: '#/requests?model=' + encodeURIComponent(x.model) }, x.model)),
        td(stateBadge(x.state)), td(int(u.requests), 'num'),
        td(pct(u.requests ? u.errors / u.requests : null), 'num'), td(int(x.in_flight), 'num opt'),
        td(`${x.consecutive_failures} / ${int(x.failures)}`, 'num opt'),
        td(ms(x.ewma_ttft_ms), 'num opt'), td(u.last_error ? shortWhen(u.last_error) : '—', 'opt'),
        td([h('div', { class: 'mono' }, x.deployment), h('div', { class: 'muted small-text' }, `${x.protocol}: ${x.provider} → ${x.upstream_model}`)], 'opt'));
    });
    const errors = d.recent_errors.map((r) => h('tr', {
      class: 'click', 'data-error-request': r.request_id, onclick: () => { location.hash = '#/requests/' + encodeURIComponent(r.request_id); },
    }, h('td', { title: when(r.created) }, shortWhen(r.created)), td(r.model || '—'), td(r.provider || '—', 'opt'), td(statusBadge(r.status)),
    td(r.error_type || '—'), td(r.key_name, 'opt'), td(r.request_id, 'mono opt')));
    return h('div', null,
      pageHead('Models & deployments', h('button', { type: 'button', onclick: () => route() }, 'Refresh')),
      h('section', { class: 'cards' },
        stat('Models', int(models.size), null, 'models'),
        stat('Deployments', int(d.deployments.length), null, 'deployments'),
        stat('Not healthy', int(open), 'open, probing or cooling', 'unhealthy'),
        stat('Unavailable models', int(d.unavailable.length), null, 'unavailable')),
      d.unavailable.length ? h('div', { class: 'notice bad' }, d.unavailable.map((u) => h('div', null, `${u.model}: ${u.reason}`))) : null,
      h('div', { class: 'stack' },
        panel('Deployments (requests and errors: last 24 h)', table(
          [['Model'], ['Health'], ['Requests', 'num'], ['Errors', 'num'], ['In flight', 'num opt'],
            ['Failures (in a row / all)', 'num opt'], ['TTFT (ewma)', 'num opt'], ['Last error', 'opt'], ['Deployment', 'opt']],
          rows, { empty: 'No deployments configured.' })),
        panel('Recent errors (7 days)', table(
          [['Time'], ['Model'], ['Provider', 'opt'], ['Status'], ['Error'], ['Key', 'opt'], ['Request', 'opt']],
          errors, { empty: 'No failed requests in the last 7 days.' }))));
  }

  // --- the request log ----------------------------------------------------------------

  const LOG_RANGES = [['1h', 'last hour'], ['24h', 'last 24 h'], ['7d', 'last 7 days'], ['30d', 'last 30 days'], ['', 'all time']];
  const STATUS = [['', 'any'], ['ok', 'successful'], ['error', 'failed'], ['4xx', '4xx'], ['5xx', '5xx'], ['429', '429'], ['401', '401'], ['499', '499 (client gone)']];

  async function pageRequests(_parts, params) {
    const filters = {
      since: params.has('since') ? params.get('since') : '24h', model: params.get('model') || '',
      key: params.get('key') || '', status: params.get('status') || '', stream: params.get('stream') || '',
    };
    const cursor = params.get('cursor') || '';
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) qs.set(k, v);
    if (cursor) qs.set('cursor', cursor);
    qs.set('limit', '50');
    const page = await api('GET', '/admin/dashboard/requests?' + qs);
    if (!cursor) state.cursors = [];
    const go = (next, c) => {
      const p = new URLSearchParams();
      p.set('since', next.since);
      for (const k of ['model', 'key', 'status', 'stream']) if (next[k]) p.set(k, next[k]);
      if (c) p.set('cursor', c);
      location.hash = '#/requests?' + p;
    };
    const sel = (name, label, options) => h('div', { class: 'field' }, h('label', { for: 'f-' + name }, label),
      h('select', {
        id: 'f-' + name, name,
        onchange: (ev) => { state.cursors = []; go({ ...filters, [name]: ev.target.value }, ''); },
      }, options.map(([value, text]) => h('option', { value, selected: filters[name] === value }, text))));
    const keys = state.meta.keys.map((k) => [k.id, k.name + (k.revoked ? ' (revoked)' : '')]);
    const form = h('form', { class: 'filters', onsubmit: (ev) => ev.preventDefault() },
      sel('since', 'Time', LOG_RANGES),
      sel('model', 'Model', [['', 'any'], ...state.meta.models.map((m) => [m, m])]),
      sel('key', 'Key', [['', 'any'], ['master', 'master key'], ...keys]),
      sel('status', 'Status', STATUS),
      sel('stream', 'Stream', [['', 'any'], ['true', 'streamed'], ['false', 'not streamed']]));
    const rows = page.data.map((r) => h('tr', {
      class: 'click', 'data-request-id': r.request_id,
      onclick: () => { location.hash = '#/requests/' + encodeURIComponent(r.request_id); },
    },
    h('td', { title: when(r.created) }, shortWhen(r.created)),
    td(h('a', { href: '#/requests/' + encodeURIComponent(r.request_id) }, r.request_id.slice(0, 22)), 'mono opt'),
    td(r.key_name, 'opt'), td(r.model || '—'), td(r.provider || '—', 'opt'), td(statusBadge(r.status)),
    td(`${int(r.prompt_tokens)} / ${int(r.completion_tokens)}`, 'num opt'), td(usd(r.cost_usd), 'num'),
    td(ms(r.latency_ms), 'num'), td(ms(r.ttft_ms), 'num opt'), td(r.stream ? 'yes' : 'no', 'opt')));
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', disabled: !cursor, onclick: () => { state.cursors = []; go(filters, ''); } }, 'Newest'),
      h('button', {
        type: 'button', disabled: !cursor,
        onclick: () => { const prev = state.cursors.pop() || ''; go(filters, prev); },
      }, '← Newer'),
      h('button', {
        type: 'button', id: 'older', disabled: !page.next,
        onclick: () => { state.cursors.push(cursor); go(filters, page.next); },
      }, 'Older →'),
      h('span', { class: 'muted' }, `${page.data.length} rows${page.next ? ', more below' : ''}`));
    return h('div', null,
      pageHead('Request log', h('button', { type: 'button', onclick: () => route() }, 'Refresh')),
      form,
      panel(null, table(
        [['Time'], ['Request', 'opt'], ['Key', 'opt'], ['Model'], ['Provider', 'opt'], ['Status'], ['Tokens in/out', 'num opt'],
          ['Cost', 'num'], ['Latency', 'num'], ['TTFT', 'num opt'], ['Stream', 'opt']],
        rows, { empty: 'No requests match these filters.' }), pager));
  }

  const FIELDS = [
    ['request_id', 'Request id'], ['created', 'Time'], ['status', 'Status'], ['error_type', 'Error'],
    ['key_name', 'Key'], ['key_id', 'Key id'], ['owner', 'Owner'], ['model', 'Model (asked for)'],
    ['provider', 'Provider'], ['upstream_model', 'Upstream model'], ['upstream_request_id', 'Upstream request id'],
    ['stream', 'Streamed'], ['prompt_tokens', 'Prompt tokens'], ['completion_tokens', 'Completion tokens'],
    ['total_tokens', 'Total tokens'], ['cached_tokens', 'Cached tokens'], ['reasoning_tokens', 'Reasoning tokens'],
    ['cost_usd', 'Cost'], ['latency_ms', 'Latency'], ['ttft_ms', 'Time to first token'],
  ];

  function fieldValue(k, v) {
    if (v === null || v === undefined) return '—';
    if (k === 'created') return `${when(v)} (${new Date(v * 1000).toISOString()})`;
    if (k === 'status') return statusBadge(v);
    if (k === 'cost_usd') return usd(v);
    if (k === 'latency_ms' || k === 'ttft_ms') return ms(v);
    if (k === 'stream') return v ? 'yes' : 'no';
    if (k.endsWith('_tokens')) return int(v);
    return String(v);
  }

  async function pageRequest(parts) {
    const r = await api('GET', '/admin/dashboard/requests/' + encodeURIComponent(parts[0]));
    return h('div', null,
      pageHead('Request', h('a', { class: 'button', href: '#/requests' }, '← Request log')),
      panel(r.request_id, h('dl', { class: 'detail', id: 'request-detail' },
        FIELDS.map(([k, label]) => [h('dt', null, label), h('dd', { 'data-field': k, class: k.endsWith('id') ? 'mono' : null }, fieldValue(k, r[k]))]))),
      h('div', { class: 'actions spaced' },
        r.key_id ? h('a', { class: 'button', href: '#/requests?since=&key=' + encodeURIComponent(r.key_id) }, 'Requests of this key') : null,
        r.model ? h('a', { class: 'button', href: '#/requests?since=&model=' + encodeURIComponent(r.model) }, 'Requests of this model') : null),
      h('p', { class: 'muted' }, 'Prompts and answers are not stored; the usage row is all there is.'));
  }

  // --- playground ---------------------------------------------------------------------

  function chatKey() {
    const c = state.chat;
    if (c.keyId === 'admin') return state.admin;
    if (c.keyId === 'paste') return c.pasted.trim();
    const s = state.secrets.get(c.keyId);
    return s ? s.secret : '';
  }

  async function pagePlayground() {
    const c = state.chat;
    if (c.keyId !== 'admin' && c.keyId !== 'paste' && !state.secrets.has(c.keyId)) c.keyId = 'admin';
    const messages = h('div', { class: 'messages', id: 'messages', 'aria-live': 'polite' });
    const modelSel = h('select', { id: 'pg-model', onchange: (ev) => { c.model = ev.target.value; } });
    const modelNote = h('p', { class: 'muted' });
    const loadModels = async () => {
      const key = chatKey();
      modelSel.replaceChildren();
      modelNote.textContent = '';
      if (!key) { modelNote.textContent = 'Paste a key first.'; return; }
      try {
        const r = await fetch('/v1/models', { headers: { Authorization: 'Bearer ' + key } });
        const data = await r.json();
        if (!r.ok) throw new Error((data.error && data.error.message) || 'HTTP ' + r.status);
        const ids = data.data.map((m) => m.id);
        if (!ids.includes(c.model)) c.model = ids[0] || '';
        modelSel.replaceChildren(...ids.map((id) => h('option', { value: id, selected: id === c.model }, id)));
        if (!ids.length) modelNote.textContent = 'This key may use no model.';
      } catch (err) {
        modelNote.textContent = 'Models: ' + err.message;
      }
    };
    const paste = h('input', {
      id: 'pg-paste', type: 'password', autocomplete: 'off', placeholder: 'sk-cg-…', value: c.pasted,
      class: c.keyId === 'paste' ? null : 'hidden', onchange: (ev) => { c.pasted = ev.target.value; loadModels(); },
    });
    const keySel = h('select', {
      id: 'pg-key',
      onchange: (ev) => {
        c.keyId = ev.target.value;
        paste.classList.toggle('hidden', c.keyId !== 'paste');
        loadModels();
      },
    },
    h('option', { value: 'admin', selected: c.keyId === 'admin' }, 'admin (master) key'),
    [...state.secrets].map(([id, s]) => h('option', { value: id, selected: c.keyId === id }, `${s.name} (${id})`)),
    h('option', { value: 'paste', selected: c.keyId === 'paste' }, 'paste a key…'));
    const system = h('textarea', { id: 'pg-system', rows: 3, placeholder: 'optional', onchange: (ev) => { c.system = ev.target.value; } }, c.system);
    const maxTokens = h('input', { id: 'pg-max', type: 'number', min: '1', placeholder: 'model default' });
    const input = h('textarea', { id: 'pg-input', rows: 2, placeholder: 'Message… (Enter sends, Shift+Enter: new line)' });
    const send = h('button', { type: 'submit', class: 'primary', id: 'pg-send' }, 'Send');
    const stop = h('button', { type: 'button', id: 'pg-stop', disabled: true, onclick: () => c.busy && c.busy.abort() }, 'Stop');
    const clear = h('button', { type: 'button', onclick: () => { c.messages = []; messages.replaceChildren(); } }, 'Clear chat');
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); composer.requestSubmit(); }
    });

    for (const m of c.messages) {
      messages.append(h('div', { class: 'msg ' + m.role }, m.content));
      if (m.meta) messages.append(metaLine(m.meta));
    }

    const composer = h('form', {
      class: 'composer',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const text = input.value.trim();
        const key = chatKey();
        if (!text || c.busy) return;
        if (!key) { modelNote.textContent = 'Choose or paste a key.'; return; }
        input.value = '';
        c.messages.push({ role: 'user', content: text });
        messages.append(h('div', { class: 'msg user' }, text));
        send.disabled = true;
        stop.disabled = false;
        try {
          await converse(key, messages, maxTokens.value ? Number(maxTokens.value) : null);
        } finally {
          send.disabled = false;
          stop.disabled = true;
          input.focus();
        }
      },
    }, input, h('div', { class: 'actions' }, send, stop));

    loadModels();
    return h('div', null,
      pageHead('Playground', clear),
      h('div', { class: 'play' },
        h('section', { class: 'panel settings' },
          h('div', { class: 'field' }, h('label', { for: 'pg-model' }, 'Model'), modelSel, modelNote),
          h('div', { class: 'field' }, h('label', { for: 'pg-key' }, 'API key'), keySel, paste),
          h('details', { class: 'more' }, h('summary', null, 'More settings'),
            h('div', { class: 'field' }, h('label', { for: 'pg-max' }, 'Max output tokens'), maxTokens),
            h('div', { class: 'field' }, h('label', { for: 'pg-system' }, 'System prompt'), system)),
          h('p', { class: 'muted' }, 'Requests go through this gateway’s /v1/chat/completions like any client’s, streamed, and are billed to the chosen key.')),
        h('section', { class: 'panel chat' }, messages, composer)));
  }

  async function converse(key, box, maxTokens) {
    const c = state.chat;
    const ctrl = new AbortController();
    c.busy = ctrl;
    const body = {
      model: c.model,
      messages: [
        ...(c.system.trim() ? [{ role: 'system', content: c.system.trim() }] : []),
        ...c.messages.map((m) => ({ role: m.role, content: m.content })),
      ],
      stream: true,
      stream_options: { include_usage: true },
    };
    if (maxTokens) body.max_tokens = maxTokens;
    const reasoning = h('div', { class: 'reasoning hidden' });
    const answer = h('span');
    const bubble = h('div', { class: 'msg assistant' }, reasoning, answer);
    const meta = h('div', { class: 'msg-meta' }, 'waiting…');
    box.append(bubble, meta);
    const started = performance.now();
    let ttft = null;
    let usage = null;
    let rid = null;
    let failure = null;
    try {
      const r = await fetch('/v1/chat/completions', {
        method: 'POST', signal: ctrl.signal,
        headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      rid = r.headers.get('x-request-id');
      if (!r.ok) {
        let msg = 'HTTP ' + r.status;
        try { const e = await r.json(); msg = e.error.message; } catch (err) { /* not JSON */ }
        failure = `${r.status}: ${msg}`;
      } else {
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = '';
        let done = false;
        while (!done) {
          const chunk = await reader.read();
          if (chunk.done) break;
          buf += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, '\n');
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
            if (!data) continue;
            if (data === '[DONE]') { done = true; break; }
            const obj = JSON.parse(data);
            if (obj.error) { failure = obj.error.message; continue; }
            if (obj.usage) usage = obj.usage;
            const delta = obj.choices && obj.choices[0] && obj.choices[0].delta;
            if (!delta) continue;
            if (ttft === null && (delta.content || delta.reasoning_content)) ttft = performance.now() - started;
            if (delta.reasoning_content) {
              reasoning.classList.remove('hidden');
              reasoning.textContent += delta.reasoning_content;
            }
            if (delta.content) answer.textContent += delta.content;
            box.lastElementChild.scrollIntoView({ block: 'nearest' });
          }
        }
      }
    } catch (err) {
      failure = err.name === 'AbortError' ? 'stopped' : err.message;
    } finally {
      c.busy = null;
    }
    const info = { usage, elapsed: performance.now() - started, ttft, rid, cost: undefined };
    if (answer.textContent) c.messages.push({ role: 'assistant', content: answer.textContent, meta: info });
    else if (failure) c.messages.pop(); // nothing came back: the question can be asked again
    if (failure) {
      if (answer.textContent) box.insertBefore(h('div', { class: 'msg error' }, failure), meta);
      else bubble.replaceWith(h('div', { class: 'msg error', role: 'alert' }, failure));
    }
    meta.replaceWith(metaLine(info));
    if (!rid) return;
    // the usage row (and so the cost) is written a moment after the answer
    for (let i = 0; i < 30; i++) {
      try {
        const row = await api('GET', '/admin/dashboard/requests/' + encodeURIComponent(rid));
        info.cost = row.cost_usd === null && row.status >= 400 ? 0 : row.cost_usd; // failures are free
        break;
      } catch (err) {
        if (err.status !== 404) { info.cost = 'unknown'; break; }
        await new Promise((res) => setTimeout(res, 200));
      }
    }
    if (info.cost === undefined) info.cost = 'not recorded yet';
    const line = box.querySelector(`[data-usage="${CSS.escape(rid)}"]`);
    if (line) line.replaceWith(metaLine(info));
  }

  /* tokens, time, cost and a link to the request's detail, under an answer */
  function metaLine(info) {
    const parts = [];
    if (info.usage) parts.push(`${int(info.usage.prompt_tokens)} in · ${int(info.usage.completion_tokens)} out tokens`);
    parts.push(`${ms(info.elapsed)}${info.ttft !== null ? ` (first token ${ms(info.ttft)})` : ''}`);
    const line = h('div', { class: 'msg-meta', 'data-usage': info.rid || '' }, parts.join(' · '));
    if (!info.rid) return line;
    let cost = 'cost …';
    if (typeof info.cost === 'number') cost = 'cost ' + usd(info.cost);
    else if (info.cost === null) cost = 'unpriced';
    else if (info.cost !== undefined) cost = 'cost ' + info.cost;
    line.append(' · ', h('span', { 'data-cost': info.cost === undefined ? null : String(info.cost) }, cost), ' · ',
      h('a', { href: '#/requests/' + encodeURIComponent(info.rid), 'data-request-link': info.rid }, 'details'));
    return line;
  }

  // --- start --------------------------------------------------------------------------

  window.addEventListener('hashchange', route);
  let resizeTimer = null;
  let lastWidth = window.innerWidth;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      const { parts } = parseHash();
      if (Math.abs(window.innerWidth - lastWidth) > 80 && (parts[0] || 'overview') === 'overview' && state.admin) route();
      lastWidth = window.innerWidth;
    }, 250);
  });
  route();
})();
