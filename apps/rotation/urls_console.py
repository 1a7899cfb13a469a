from django.urls import path

from apps.rotation import views

urlpatterns = [
    path("", views.index, name="rotation"),
    path("defaults/", views.default_set, name="rotation-default-set"),
    path("jobs/<uuid:job_id>/", views.job, name="rotation-job"),
    path("jobs/<uuid:job_id>/<str:action>/", views.job_action, name="rotation-job-action"),
    path("keys/<uuid:key_id>/rotate/", views.key_rotate, name="rotation-key-rotate"),
    path("keys/<uuid:key_id>/rewrap/", views.key_rewrap, name="rotation-key-rewrap"),
    path("keys/<uuid:key_id>/policy/", views.key_policy_set, name="rotation-key-policy"),
]

# The key chain page's rotate button, at the chain's URL (kms_project/urls.py includes these
# under keys/, before apps.keychain.urls_console): rotation owns it, as it queues the rewrap.
chain_urlpatterns = [
    path("<uuid:key_id>/rotate/", views.chain_key_rotate, name="key-rotate"),
]
