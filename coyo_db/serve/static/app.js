// The reviewer's name (the box in the menu bar) is remembered in this browser and sent with
// every review form.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("reviewer");
  if (!box) return;
  box.value = localStorage.getItem("coyo-db-reviewer") || box.value;
  box.addEventListener("change", () => localStorage.setItem("coyo-db-reviewer", box.value));
  document.querySelectorAll("form.review").forEach((form) => {
    form.addEventListener("submit", () => { form.elements.reviewer.value = box.value; });
  });
});

// Ctrl+Enter (or Cmd+Enter) in the SQL box runs the query.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.name === "sql") {
    event.target.form.submit();
  }
});
