"""The console: server-rendered pages for coordinators, district admins and partner staff, over
the other services' public HTTP APIs with the signed-in person's own token."""
