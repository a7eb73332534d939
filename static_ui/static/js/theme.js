// Applies the saved theme before the page paints: a classic script, run from <head>.
(function () {
  try {
    const saved = localStorage.getItem("trioswap.theme");
    if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
  } catch {
    // Storage can be blocked; the system's preference then decides.
  }
})();
