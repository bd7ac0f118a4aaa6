// Live pages: every data-refresh-ms, fetch this page again and swap in its <main id="live">, unless the tab is
// hidden or a control inside it has the focus (so a click is never lost to a swap).
(function () {
  const live = document.getElementById("live");
  const every = Number(live && live.dataset.refreshMs) || 0;
  if (!live || every <= 0) return;
  const url = new URL(location.href);
  url.searchParams.delete("done");
  setInterval(async function () {
    const main = document.getElementById("live");
    if (document.hidden || (document.activeElement && main.contains(document.activeElement) && document.activeElement !== document.body)) return;
    try {
      const r = await fetch(url, { headers: { "X-Rill-Live": "1" }, credentials: "same-origin" });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById("live");
      if (fresh) main.replaceWith(fresh);
    } catch (e) { /* the next tick tries again */ }
  }, every);
})();
