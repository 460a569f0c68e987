// Ctrl+Enter (or Cmd+Enter) in the SQL box runs the query.
document.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.name === "sql") {
    event.target.form.submit();
  }
});
