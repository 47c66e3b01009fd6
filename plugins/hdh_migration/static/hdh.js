// The UI frames external views in a sandbox without top navigation: a link to an Airflow page goes
// through the parent's router instead (same origin), so it opens in the UI rather than inside the frame.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a.airflow");
  if (!link || window.top === window) return;
  try {
    window.top.history.pushState(null, "", link.getAttribute("href"));
    window.top.dispatchEvent(new PopStateEvent("popstate"));
    event.preventDefault();
  } catch (error) {}
});

// Follow the Airflow UI's light or dark theme: the UI marks its <html> with the class "light" or "dark"
// and keeps the choice in localStorage ("theme": light, dark or system), both of this origin.
(function followAirflowTheme() {
  const root = document.documentElement;
  const prefersDark = () => window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  function airflowTheme() {
    try {
      const parent = window.top.document.documentElement.classList;
      if (window.top !== window && parent.contains("dark")) return "dark";
      if (window.top !== window && parent.contains("light")) return "light";
    } catch (error) {}
    let chosen = null;
    try {
      chosen = window.localStorage.getItem("theme");
    } catch (error) {}
    if (chosen === "dark" || chosen === "light") return chosen;
    return prefersDark() ? "dark" : "light";
  }
  const apply = () => { root.dataset.theme = airflowTheme(); };
  apply();
  window.addEventListener("storage", apply);
  try {
    if (window.top !== window) {
      new MutationObserver(apply).observe(window.top.document.documentElement, {attributes: true, attributeFilter: ["class"]});
    }
  } catch (error) {}
  if (window.matchMedia) window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", apply);
})();
