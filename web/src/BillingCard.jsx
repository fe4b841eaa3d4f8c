// The Orzbob billing card: the same figures as the dashboard and `orz cloud billing`, read from
// GET {apiUrl}/v1/billing with the given token. It refreshes every `refreshMs` without
// blanking: a failed refresh keeps the last good figures and says so.
import { useCallback, useEffect, useRef, useState } from "react";

const CAP_REASONS = {
  quota_exhausted: "allowance used up",
  spend_limit: "spend limit reached",
  daily_cap: "daily cap reached",
  continuous_cap: "continuous-run cap reached",
  idle: "idle",
};

export const hhmm = (iso) => {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
};

const day = (iso) => String(iso).slice(0, 10);
const when = (iso) => (iso ? `${day(iso)} ${hhmm(iso)}` : "—");
const hours = (n) =>
  Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export function daysLeft(reset, asOf) {
  const ms = new Date(reset) - new Date(asOf);
  if (ms <= 0) return "now";
  const days = Math.floor(ms / 86400000);
  if (days >= 1) return `in ${days} day${days === 1 ? "" : "s"}`;
  return `in ${Math.max(1, Math.floor(ms / 3600000))} h`;
}

export function statusOf(b) {
  const throttles = b.throttles || [];
  if (throttles.length) {
    const why = CAP_REASONS[throttles[0].cap] || throttles[0].cap;
    return { text: `Paused (${why}): ${throttles[0].detail}`, tone: "bad" };
  }
  if (b.in_overage) {
    return { text: "In overage: usage past the allowance is billed at tier rates.", tone: "bad" };
  }
  if (!b.hours_included) return { text: "Usage only: every minute is billed at tier rates.", tone: "" };
  const left = Math.max(0, b.hours_included - b.hours_used);
  return { text: `Within allowance: ${hours(left)} small-hours left.`, tone: "good" };
}

function Bar({ label, percent, tone }) {
  const shown = Math.max(0, Math.min(100, percent));
  return (
    <div
      className="orz-bar"
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(shown)}
      aria-valuetext={`${percent.toFixed(2)} %`}
      data-tone={tone}
      style={{ background: "#e6eaf0", borderRadius: 6, height: 10, overflow: "hidden" }}
    >
      <span
        style={{
          display: "block",
          height: "100%",
          width: `${shown}%`,
          background: tone === "bad" ? "#b42318" : tone === "warn" ? "#9a6700" : "#1a7f37",
        }}
      />
    </div>
  );
}

async function fetchBilling(apiUrl, token, signal) {
  let response;
  try {
    response = await fetch(`${apiUrl.replace(/\/+$/, "")}/v1/billing`, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      signal,
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new Error("the billing service cannot be reached");
  }
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.detail) detail = `${body.detail} (HTTP ${response.status})`;
    } catch {
      /* not JSON: keep the status */
    }
    throw new Error(detail);
  }
  return response.json();
}

/**
 * @param {{apiUrl: string, token: string, refreshMs?: number}} props
 */
export function BillingCard({ apiUrl, token, refreshMs = 60000 }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const current = useRef(null); // the AbortController of the request in flight

  const load = useCallback(async () => {
    if (current.current) current.current.abort();
    const controller = new AbortController();
    current.current = controller;
    try {
      const body = await fetchBilling(apiUrl, token, controller.signal);
      if (controller.signal.aborted) return;
      setData(body);
      setError(null);
    } catch (err) {
      if (controller.signal.aborted || (err && err.name === "AbortError")) return;
      setError(err.message || String(err)); // the last good figures stay on screen
    }
  }, [apiUrl, token]);

  useEffect(() => {
    // New endpoint or token: the old figures are someone else's, so start afresh.
    setData(null);
    setError(null);
    load();
    const timer = setInterval(load, refreshMs);
    return () => {
      clearInterval(timer);
      if (current.current) current.current.abort();
    };
  }, [load, refreshMs]);

  if (!data) {
    return (
      <section className="orz-billing-card" aria-label="Billing" aria-busy={!error}>
        {error ? <p role="alert">Billing could not be loaded: {error}</p> : <p>Loading billing…</p>}
      </section>
    );
  }

  const b = data;
  const est = b.estimate || {};
  const fc = b.forecast || {};
  const pct = Number(b.percent_used);
  const paused = (b.throttles || []).length > 0;
  const status = statusOf(b);
  const scale = Math.max(Number(b.hours_included) || 0, Number(b.hours_used) || 0) || 1;
  const limit = b.spend_limit === null || b.spend_limit === undefined ? null : Number(b.spend_limit);
  const share = limit === null ? 0 : limit > 0 ? (Number(est.total) * 100) / limit : 100;
  const credit = est.credits_applied && est.credits_applied !== "0.00" ? ` − credits $${est.credits_applied}` : "";
  const alerts = b.last_alert ? [b.last_alert] : [];

  return (
    <section className="orz-billing-card" aria-label="Billing">
      {error && (
        <p role="alert" className="orz-banner">
          Refresh failed: {error}. Showing figures as of {hhmm(b.as_of)}.
        </p>
      )}
      <header>
        <h2 data-field="organization">{b.organization}</h2>
        <p data-field="plan">{b.plan}</p>
        <p data-field="as-of">as of {hhmm(b.as_of)}</p>
      </header>
      <div>
        <span>Allowance </span>
        <span data-field="allowance">
          {b.hours_included
            ? `${hours(b.hours_used)} / ${b.hours_included} small-hours (${pct.toFixed(2)} %)`
            : `${hours(b.hours_used)} small-hours (no allowance)`}
        </span>
        <Bar
          label="Allowance used"
          percent={b.hours_included ? pct : 0}
          tone={b.in_overage || paused ? "bad" : pct >= 90 ? "warn" : "good"}
        />
      </div>
      <p data-field="status" data-tone={status.tone}>
        {status.text}
      </p>
      <dl>
        <dt>Estimated bill</dt>
        <dd data-field="estimated_bill">{`$${est.total} (base $${est.base} + usage $${est.usage}${credit})`}</dd>
        <dt>Forecast at period end</dt>
        <dd data-field="forecast">{`$${fc.projected_bill}, ${hours(fc.projected_hours_used)} small-hours`}</dd>
        <dt>Resets</dt>
        <dd data-field="reset">{`${day(b.reset_date)} (${daysLeft(b.reset_date, b.as_of)})`}</dd>
        <dt>Today (UTC)</dt>
        <dd data-field="daily_usage">{b.daily_usage}</dd>
        <dt>Throttle</dt>
        <dd data-field="throttle_status">{b.throttle_status}</dd>
      </dl>
      {limit !== null && (
        <div>
          <span>Spend limit </span>
          <span data-field="spend_limit">{`$${est.total} of $${b.spend_limit} (${share.toFixed(0)} %)`}</span>
          <Bar label="Spend limit used" percent={share} tone={share >= 100 ? "bad" : share >= 80 ? "warn" : "good"} />
        </div>
      )}
      <ul aria-label="By tier">
        {(b.tiers || []).map((t) => (
          <li key={t.tier} data-tier={t.tier}>
            <span>{`${t.name} · $${t.hourly_rate}/h · ${hours(t.hours)} h · overage ${t.overage_minutes} min · $${t.cost}`}</span>
            <Bar
              label={`${t.name} share of the allowance`}
              percent={((t.minutes * t.small_hour_weight) / 60 / scale) * 100}
              tone={t.overage_minutes > 0 ? "warn" : "good"}
            />
          </li>
        ))}
      </ul>
      <ul aria-label="Caps">
        {(b.throttles || []).map((t) => (
          <li key={`now-${t.cap}`}>{`Now: ${CAP_REASONS[t.cap] || t.cap}. ${t.detail}`}</li>
        ))}
        {(b.upcoming || []).map((u, i) => (
          <li key={`soon-${u.cap}-${u.instance_id || i}`}>
            {`Soon: ${CAP_REASONS[u.cap] || u.cap}${u.instance_name ? ` on ${u.instance_name}` : ""} at ${when(u.at)}. ${u.detail}`}
          </li>
        ))}
      </ul>
      <ul aria-label="Alerts">
        {alerts.map((a) => (
          <li key={a.created_at || a.kind}>
            {`${a.kind} ${a.threshold} % (${a.sent_at ? `sent ${when(a.sent_at)}` : a.state})${a.subject ? `: ${a.subject}` : ""}`}
          </li>
        ))}
      </ul>
    </section>
  );
}

export default BillingCard;
