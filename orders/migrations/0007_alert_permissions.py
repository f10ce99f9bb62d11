"""The staff groups get the alert pages: Viewer and Operator read the channels and the history; Administrator
also adds, changes and deletes channels. The history is read-only for everyone (its admin says so), so no
group gets a write permission on it.
"""

from django.db import migrations

READ = ["orders.view_alert", "orders.view_alertchannel"]
GRANTS = {
    "Viewer": READ,
    "Operator": READ,
    "Administrator": READ + ["orders.add_alertchannel", "orders.change_alertchannel", "orders.delete_alertchannel"],
}


def _permissions(apps, names: list[str]) -> list:
    from django.contrib.auth.management import create_permissions

    # On a fresh database the new models' permissions are only made after every migration (post_migrate).
    # The tests' group re-creation passes the live registry: put its models_module back as it was.
    config = apps.get_app_config("orders")
    previous, config.models_module = getattr(config, "models_module", None), True
    create_permissions(config, verbosity=0, apps=apps)
    config.models_module = previous
    Permission = apps.get_model("auth", "Permission")
    return [Permission.objects.get(content_type__app_label=name.split(".")[0], codename=name.split(".")[1])
            for name in names]


def grant_alert_permissions(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    for name, permissions in GRANTS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*_permissions(apps, permissions))


def revoke_alert_permissions(apps, schema_editor) -> None:
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(content_type__app_label="orders",
                              content_type__model__in=["alert", "alertchannel"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0006_alerts"),
        ("orders", "0003_staff_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant_alert_permissions, revoke_alert_permissions)]
