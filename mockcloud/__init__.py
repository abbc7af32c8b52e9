"""mockcloud: a local server that speaks the hosted Agentuity sandbox API, with real sandboxes
(the localsb engine) behind it. See mockcloud/app.py for the application and mockcloud/routes.py
for every route it serves."""
