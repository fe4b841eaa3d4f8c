// The billing dashboard. Every figure comes from GET /v1/billing and the instances API, as
// the CLI reads them; nothing is computed here but widths and "days left". Server text is
// only ever set with textContent, never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "orzbob.token"; // sessionStorage: this tab only, never the URL
  const REFRESH_MS = 60 * 1000;
  const CAP_REASONS = {
    quota_exhausted: "allowance used up",
    spend_limit: "spend limit reached",
    daily_cap: "daily cap reached",
    continuous_cap: "continuous-run cap reached",
    idle: "idle",
  };

  const $ = (id) => document.getElementById(id);
  const field = (name) => document.querySelector(`[data-field="${name}"]`);
  let timer = null;
  let lastGood = null; // the last billing object shown; kept when a refresh fails

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "the billing service cannot be reached");
    }
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (body && body.detail) detail = `${body.detail} (HTTP ${response.status})`;
      } catch (err) {
        /* not JSON: keep the status */
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }

  const json = async (method, path) => (await api(method, path)).json();

  // -- formatting ---------------------------------------------------------------------------
  const hhmm = (iso) => {
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
  };
  const day = (iso) => String(iso).slice(0, 10);
  const when = (iso) => (iso ? `${day(iso)} ${hhmm(iso)}` : "—");
  const hours = (n) => Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function daysLeft(reset, asOf) {
    const ms = new Date(reset) - new Date(asOf);
    if (ms <= 0) return "now";
    const days = Math.floor(ms / 86400000);
    if (days >= 1) return `in ${days} day${days === 1 ? "" : "s"}`;
    return `in ${Math.max(1, Math.floor(ms / 3600000))} h`;
  }

  function statusText(b) {
    const throttles = b.throttles || [];
    if (throttles.length) {
      const why = CAP_REASONS[throttles[0].cap] || throttles[0].cap;
      return { text: `Paused (${why}): ${throttles[0].detail}`, tone: "bad" };
    }
    if (b.in_overage) return { text: "In overage: usage past the allowance is billed at tier rates.", tone: "bad" };
    if (!b.hours_included) return { text: "Usage only: every minute is billed at tier rates.", tone: "" };
    const left = Math.max(0, b.hours_included - b.hours_used);
    return { text: `Within allowance: ${hours(left)} small-hours left.`, tone: "good" };
  }

  function setBar(bar, percent, tone) {
    const shown = Math.max(0, Math.min(100, percent));
    bar.setAttribute("aria-valuenow", String(Math.round(shown)));
    bar.setAttribute("aria-valuetext", `${percent.toFixed(2)} %`);
    bar.dataset.tone = tone;
    bar.firstElementChild.style.width = `${shown}%`;
  }

  function listItems(list, items, empty) {
    list.replaceChildren();
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = empty;
      list.append(li);
      return;
    }
    for (const item of items) list.append(item);
  }

  function li(text, cls) {
    const el = document.createElement("li");
    el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }

  // -- the billing card ---------------------------------------------------------------------
  function renderBilling(b) {
    field("organization").textContent = b.organization;
    field("plan").textContent = b.plan;
    const pct = Number(b.percent_used);
    const paused = (b.throttles || []).length > 0;
    if (b.hours_included) {
      field("allowance").textContent = `${hours(b.hours_used)} / ${b.hours_included} small-hours (${pct.toFixed(2)} %)`;
      setBar($("allowance-bar"), pct, b.in_overage || paused ? "bad" : pct >= 90 ? "warn" : "good");
    } else {
      field("allowance").textContent = `${hours(b.hours_used)} small-hours (no allowance)`;
      setBar($("allowance-bar"), 0, "good");
    }
    const status = statusText(b);
    field("status").textContent = status.text;
    field("status").dataset.tone = status.tone;
    const est = b.estimate || {};
    const credit = est.credits_applied && est.credits_applied !== "0.00" ? ` − credits $${est.credits_applied}` : "";
    field("estimated_bill").textContent = `$${est.total} (base $${est.base} + usage $${est.usage}${credit})`;
    const fc = b.forecast || {};
    field("forecast").textContent = `$${fc.projected_bill}, ${hours(fc.projected_hours_used)} small-hours`;
    field("reset").textContent = `${day(b.reset_date)} (${daysLeft(b.reset_date, b.as_of || new Date().toISOString())})`;
    field("daily_usage").textContent = b.daily_usage;
    field("throttle_status").textContent = b.throttle_status;
    field("credits").textContent = `$${(b.credits || {}).balance}`;

    const limitBlock = $("spend-limit");
    if (b.spend_limit !== null && b.spend_limit !== undefined) {
      limitBlock.hidden = false;
      const limit = Number(b.spend_limit);
      const share = limit > 0 ? (Number(est.total) * 100) / limit : 100;
      field("spend_limit").textContent = `$${est.total} of $${b.spend_limit} (${share.toFixed(0)} %)`;
      setBar($("spend-bar"), share, share >= 100 ? "bad" : share >= 80 ? "warn" : "good");
    } else {
      limitBlock.hidden = true;
    }

    const scale = Math.max(Number(b.hours_included) || 0, Number(b.hours_used) || 0) || 1;
    $("tiers").replaceChildren(
      ...(b.tiers || []).map((t) => {
        const item = document.createElement("li");
        item.dataset.tier = t.tier;
        const label = document.createElement("div");
        label.className = "meter-label";
        const name = document.createElement("span");
        name.textContent = `${t.name} · $${t.hourly_rate}/h`;
        const figures = document.createElement("span");
        figures.textContent = `${hours(t.hours)} h · overage ${t.overage_minutes} min · $${t.cost}`;
        label.append(name, figures);
        const bar = document.createElement("div");
        bar.className = "bar thin";
        bar.setAttribute("role", "progressbar");
        bar.setAttribute("aria-label", `${t.name} share of the allowance`);
        bar.setAttribute("aria-valuemin", "0");
        bar.setAttribute("aria-valuemax", "100");
        bar.append(document.createElement("span"));
        const weighted = (t.minutes * t.small_hour_weight) / 60;
        setBar(bar, (weighted * 100) / scale, t.overage_minutes > 0 ? "warn" : "good");
        item.append(label, bar);
        return item;
      }),
    );

    const caps = [];
    for (const t of b.throttles || []) {
      caps.push(li(`Now: ${CAP_REASONS[t.cap] || t.cap}. ${t.detail}${t.lifts_at ? ` Lifts ${when(t.lifts_at)}.` : ""}`, "bad"));
    }
    for (const u of b.upcoming || []) {
      const who = u.instance_name ? ` on ${u.instance_name}` : "";
      caps.push(li(`Soon: ${CAP_REASONS[u.cap] || u.cap}${who} at ${when(u.at)}. ${u.detail}`, "warn"));
    }
    listItems($("caps"), caps, "No cap in force or due in the next hour.");
    renderAlerts(b);

    $("as-of").textContent = `as of ${hhmm(b.as_of || new Date().toISOString())}`;
  }

  function alertText(a) {
    const sent = a.sent_at ? `sent ${when(a.sent_at)}` : a.state;
    return `${a.kind} ${a.threshold} % (${sent})${a.subject ? `: ${a.subject}` : ""}`;
  }

  let alerts = null; // GET /v1/billing/alerts when the service offers it
  function renderAlerts(b) {
    const rows = alerts && alerts.length ? alerts : b.last_alert ? [b.last_alert] : [];
    listItems($("alerts"), rows.map((a) => li(alertText(a))), "No alerts this period.");
  }

  // -- instances ------------------------------------------------------------------------------
  function renderInstances(rows) {
    const live = rows.filter((i) => i.state === "running" || i.state === "paused" || i.state === "pending");
    $("instances-empty").hidden = live.length > 0;
    $("instances").replaceChildren(
      ...live.map((i) => {
        const item = document.createElement("li");
        item.dataset.instance = i.id;
        const info = document.createElement("div");
        const name = document.createElement("strong");
        name.textContent = i.name;
        const meta = document.createElement("span");
        meta.className = "meta";
        const reason = i.reason ? ` (${i.reason})` : "";
        const source = i.last_active_source ? ` via ${i.last_active_source}` : "";
        meta.textContent = `${i.tier} · ${i.state}${reason} · last active ${when(i.last_active_at)}${source}`;
        meta.dataset.field = "instance-state";
        info.append(name, meta);
        const action = i.state === "paused" ? "resume" : "pause";
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.textContent = action === "pause" ? "Pause" : "Resume";
        button.setAttribute("aria-label", `${button.textContent} ${i.name}`);
        button.disabled = i.state === "pending";
        button.addEventListener("click", () => command(i, action, button));
        item.append(info, button);
        return item;
      }),
    );
  }

  async function command(instance, action, button) {
    button.disabled = true;
    try {
      await json("POST", `/v1/instances/${encodeURIComponent(instance.id)}/${action}`);
      await refresh();
    } catch (err) {
      showBanner(`Could not ${action} ${instance.name}: ${err.message}`);
      button.disabled = false;
    }
  }

  // -- refresh without blanking -----------------------------------------------------------------
  function showBanner(text) {
    const banner = $("banner");
    banner.textContent = text;
    banner.hidden = false;
  }

  async function refresh() {
    try {
      const [billing, instances] = await Promise.all([json("GET", "/v1/billing"), json("GET", "/v1/instances")]);
      try {
        alerts = await json("GET", "/v1/billing/alerts");
        if (!Array.isArray(alerts)) alerts = alerts && Array.isArray(alerts.alerts) ? alerts.alerts : null;
      } catch (err) {
        alerts = null; // no alert list on this service: the card shows `last_alert`
      }
      lastGood = billing;
      renderBilling(billing);
      renderInstances(instances);
      $("banner").hidden = true;
    } catch (err) {
      if (err.status === 401) {
        signOut(`Your token was refused: ${err.message}`);
        return;
      }
      // Keep what is on screen: stale figures with a clear warning beat a blank card.
      const shown = lastGood ? ` Showing figures as of ${hhmm(lastGood.as_of || new Date().toISOString())}.` : "";
      showBanner(`Refresh failed: ${err.message}.${shown} Retrying every minute.`);
    }
  }

  function startRefreshing() {
    stopRefreshing();
    timer = setInterval(refresh, REFRESH_MS);
  }

  function stopRefreshing() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  // -- sign-in ----------------------------------------------------------------------------------
  async function signIn(raw) {
    sessionStorage.setItem(TOKEN_KEY, raw);
    try {
      const org = await json("GET", "/v1/orgs/me");
      $("who").textContent = `Signed in to ${org.name}`;
    } catch (err) {
      signOut(err.status === 401 ? "That token was refused. Check it and try again." : err.message);
      return;
    }
    $("sign-in").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = false;
    await refresh();
    startRefreshing();
  }

  function signOut(message) {
    stopRefreshing();
    sessionStorage.removeItem(TOKEN_KEY);
    lastGood = null;
    $("app").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    $("sign-in").hidden = false;
    const error = $("sign-in-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("token").value = "";
    $("token").focus();
  }

  async function exportCsv() {
    const status = $("export-status");
    status.textContent = "Preparing…";
    try {
      const response = await api("GET", "/v1/billing/usage?format=csv");
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `orzbob-usage-${day(lastGood ? lastGood.period_start : new Date().toISOString())}.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      status.textContent = "Downloaded.";
    } catch (err) {
      status.textContent = `Export failed: ${err.message}`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const raw = $("token").value.trim();
      if (!raw) {
        signOut("Enter an API token.");
        return;
      }
      signIn(raw);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("refresh").addEventListener("click", refresh);
    $("export-csv").addEventListener("click", exportCsv);
    if (token()) signIn(token());
  });
})();
