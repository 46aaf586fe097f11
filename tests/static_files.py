"""WhiteNoise for the test settings: the same middleware, with its scan of the static folders kept.

WhiteNoise lists and stats every app's static files (the admin's, the API docs' bundle, ...) when
its middleware is made. A server makes it once per process; Django's test client makes a new
middleware chain for every client, so a test run would scan them again for each test that takes
`client` (about a tenth of a second each). Files do not change during a run: the scan made with the
same settings is reused. What the middleware serves, and every header it sends, are unchanged.
"""

from whitenoise.middleware import WhiteNoiseMiddleware as Scanning

_scans: dict[tuple, dict] = {}


class WhiteNoiseMiddleware(Scanning):
    def add_files_from_finders(self):
        key = (self.static_prefix, self.max_age, self.allow_all_origins, self.charset, self.index_file)
        if key not in _scans:
            before = dict(self.files)
            super().add_files_from_finders()
            _scans[key] = {url: found for url, found in self.files.items() if before.get(url) is not found}
        self.files.update(_scans[key])
