// Times are drawn by the server in the browser's time zone: tell it which one (a cookie), and
// reload once when the page was drawn in another zone. Nothing else runs on these pages.
(function () {
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone) return;
  var shown = document.getElementById("zone");
  document.cookie = "console_tz=" + encodeURIComponent(zone) + "; path=/console/; max-age=31536000; SameSite=Lax";
  if (shown && shown.dataset.zone !== zone && !sessionStorage.getItem("console_tz_reloaded")) {
    sessionStorage.setItem("console_tz_reloaded", "1");
    location.reload();
  }
})();
