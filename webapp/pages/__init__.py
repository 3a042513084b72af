"""What turns requests into calls and outcomes into pages: the till's and the kiosk's form
(views), the customer's phone and the till's wait for it (handoff), device setup (setup), the
store manager's view (manager), and the codes they draw (codes). Pages call the sign-up
(webapp.signup) and access (webapp.access); nothing below imports a page."""
