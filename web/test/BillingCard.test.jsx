// The BillingCard against a recorded GET /v1/billing response (web/test/billing.recorded.json,
// recorded from the API; tests/web/test_billing_card_fixture.py keeps it in step with it).
import { act, cleanup, render, screen } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { BillingCard } from "../src/index.js";
import recorded from "./billing.recorded.json";

const ok = (body) => ({ ok: true, status: 200, json: async () => body });
const failing = (status, detail) => ({ ok: false, status, json: async () => ({ error: "x", detail }) });
const field = (name) => document.querySelector(`[data-field="${name}"]`).textContent;

// Let pending promises (fetch → json → setState) settle inside act().
const settle = () => act(async () => {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
});

describe("BillingCard", () => {
  let fetchMock;

  beforeEach(() => {
    vi.useFakeTimers();
    fetchMock = vi.fn();
    vi.stubGlobal("fetch", fetchMock);
  });

  afterEach(() => {
    cleanup();
    vi.unstubAllGlobals();
    vi.useRealTimers();
  });

  it("renders the recorded response's figures", async () => {
    fetchMock.mockResolvedValue(ok(recorded));
    render(<BillingCard apiUrl="https://api.example.test/" token="orz_t1" />);
    await settle();

    expect(fetchMock).toHaveBeenCalledTimes(1);
    const [url, init] = fetchMock.mock.calls[0];
    expect(url).toBe("https://api.example.test/v1/billing");
    expect(init.headers.Authorization).toBe("Bearer orz_t1");

    expect(field("organization")).toBe(recorded.organization);
    expect(field("allowance")).toBe("270.00 / 200 small-hours (135.00 %)");
    expect(field("estimated_bill")).toBe("$25.83 (base $20.00 + usage $5.83)");
    expect(field("forecast")).toBe(`$${recorded.forecast.projected_bill}, ${recorded.forecast.projected_hours_used.toLocaleString("en-US", { minimumFractionDigits: 2 })} small-hours`);
    expect(field("reset")).toBe("2026-04-10 (in 20 days)");
    expect(field("daily_usage")).toBe(recorded.daily_usage);
    expect(field("throttle_status")).toBe("none");
    expect(field("status")).toMatch(/^In overage/);
    expect(field("spend_limit")).toBe("$25.83 of $30.00 (86 %)");
    expect(field("as-of")).toBe("as of 22:00 UTC");
    const bar = screen.getByRole("progressbar", { name: "Allowance used" });
    expect(bar.getAttribute("aria-valuenow")).toBe("100");
    expect(document.querySelector('[data-tier="medium"]').textContent).toContain("$3.34");
  });

  it("refreshes on its timer and keeps the last figures when a refresh fails", async () => {
    fetchMock.mockResolvedValueOnce(ok(recorded));
    render(<BillingCard apiUrl="http://api" token="t" refreshMs={60000} />);
    await settle();
    expect(field("estimated_bill")).toMatch(/^\$25\.83/);

    const later = { ...recorded, as_of: "2026-03-20T23:00:00Z", estimate: { ...recorded.estimate, total: "26.50", usage: "6.50" } };
    fetchMock.mockResolvedValueOnce(ok(later));
    await act(async () => vi.advanceTimersByTime(60000));
    await settle();
    expect(fetchMock).toHaveBeenCalledTimes(2);
    expect(field("estimated_bill")).toMatch(/^\$26\.50/);
    expect(field("as-of")).toBe("as of 23:00 UTC");

    fetchMock.mockResolvedValueOnce(failing(503, "maintenance"));
    await act(async () => vi.advanceTimersByTime(60000));
    await settle();
    expect(screen.getByRole("alert").textContent).toBe(
      "Refresh failed: maintenance (HTTP 503). Showing figures as of 23:00 UTC.",
    );
    expect(field("estimated_bill")).toMatch(/^\$26\.50/); // not blanked

    fetchMock.mockRejectedValueOnce(new TypeError("Failed to fetch"));
    await act(async () => vi.advanceTimersByTime(60000));
    await settle();
    expect(screen.getByRole("alert").textContent).toContain("cannot be reached");

    fetchMock.mockResolvedValueOnce(ok(later));
    await act(async () => vi.advanceTimersByTime(60000));
    await settle();
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("refetches when apiUrl or token change, and cleans up its timer", async () => {
    fetchMock.mockResolvedValue(ok(recorded));
    const { rerender, unmount } = render(<BillingCard apiUrl="http://a" token="t1" />);
    await settle();
    rerender(<BillingCard apiUrl="http://a" token="t2" />);
    await settle();
    rerender(<BillingCard apiUrl="http://b" token="t2" />);
    await settle();
    const calls = fetchMock.mock.calls.map(([url, init]) => `${url} ${init.headers.Authorization}`);
    expect(calls).toEqual([
      "http://a/v1/billing Bearer t1",
      "http://a/v1/billing Bearer t2",
      "http://b/v1/billing Bearer t2",
    ]);
    expect(vi.getTimerCount()).toBe(1); // one timer, not one per prop change
    unmount();
    expect(vi.getTimerCount()).toBe(0);
    await act(async () => vi.advanceTimersByTime(180000));
    expect(fetchMock).toHaveBeenCalledTimes(3);
  });

  it("says a free tier past its allowance is paused, never in overage", async () => {
    const free = {
      ...recorded,
      plan: "Free Tier",
      plan_id: "free-tier",
      hours_used: 10,
      hours_included: 10,
      percent_used: 100,
      in_overage: true,
      spend_limit: null,
      throttle_status: "quota_exhausted",
      throttles: [{ cap: "quota_exhausted", detail: "The Free Tier allowance of 10 small-hours is used up.", lifts_at: "2026-04-10T00:00:00Z" }],
    };
    fetchMock.mockResolvedValue(ok(free));
    render(<BillingCard apiUrl="http://a" token="t" />);
    await settle();
    expect(field("status")).toMatch(/^Paused \(allowance used up\)/);
    expect(field("status")).not.toMatch(/overage/);
    expect(document.querySelector('[data-field="spend_limit"]')).toBeNull();
  });
});
