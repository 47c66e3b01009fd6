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
