"""Store, ErpConnection, JobLease, CallCount and VtexRateLimit move from feeds to core: in the state only.

Their tables keep their names (Meta.db_table), so nothing in the database changes but the content types:
renamed, so that the permissions on these models (and the staff groups holding them) follow them to core.
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

import core.models
import integrationhub.crypto

MOVED = ["store", "erpconnection", "joblease", "callcount", "vtexratelimit"]


def content_types_to_core(apps, schema_editor) -> None:
    apps.get_model("contenttypes", "ContentType").objects.filter(app_label="feeds", model__in=MOVED).update(
        app_label="core")


def content_types_to_feeds(apps, schema_editor) -> None:
    apps.get_model("contenttypes", "ContentType").objects.filter(app_label="core", model__in=MOVED).update(
        app_label="feeds")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("feeds", "0013_store_erp_api_key"),  # the tables exist, with every column
        # After the staff groups are made (orders 0003, 0005, 0007) with feeds' content types, also on a fresh
        # database: the rename below then carries their permissions over.
        ("orders", "0009_erprequest"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='JobLease',
                    fields=[
                        ('name', models.CharField(max_length=50, primary_key=True, serialize=False)),
                        ('held_until', models.DateTimeField(blank=True, null=True)),
                        ('holder', models.CharField(blank=True, max_length=100)),
                    ],
                    options={
                        'db_table': 'feeds_joblease',
                    },
                ),
                migrations.CreateModel(
                    name='Store',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.SlugField(max_length=64, unique=True)),
                        ('account', models.CharField(help_text='VTEX account name, as in {account}.{environment}.com.br', max_length=100)),
                        ('environment', models.CharField(default='vtexcommercestable', max_length=100)),
                        ('base_url', models.URLField(blank=True, help_text='Overrides https://{account}.{environment}.com.br (sandbox, tests)')),
                        ('app_key', models.CharField(max_length=200)),
                        ('app_token', integrationhub.crypto.EncryptedTextField(validators=[django.core.validators.MaxLengthValidator(500)])),
                        ('hook_secret', core.models.OptionalEncryptedTextField(blank=True, default='', validators=[django.core.validators.MaxLengthValidator(500)])),
                        ('enabled', models.BooleanField(default=True)),
                        ('erp_api_key_hash', models.CharField(blank=True, max_length=64)),
                        ('erp_api_key_hint', models.CharField(blank=True, max_length=12)),
                        ('feed_status', models.CharField(choices=[('unknown', 'Not read yet'), ('ok', 'OK'), ('not_configured', 'Feed not configured on VTEX'), ('unauthorized', 'Credentials refused'), ('failing', 'Failing')], default='unknown', max_length=20)),
                        ('feed_error', models.TextField(blank=True)),
                        ('last_pull_at', models.DateTimeField(blank=True, help_text='Last feed read that succeeded', null=True)),
                        ('last_dispatch_at', models.DateTimeField(blank=True, help_text='Last dispatch run that finished', null=True)),
                        ('vtex_paused_until', models.DateTimeField(blank=True, help_text='VTEX answered 429: no call to this account before this time', null=True)),
                        ('feed_retry_at', models.DateTimeField(blank=True, help_text='The feed answered 404: the polling job reads it again at this time', null=True)),
                        ('feed_retry_seconds', models.PositiveIntegerField(default=0, help_text='The current wait between reads of a 404 feed (doubles up to 10 min; 0: not waiting)')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'db_table': 'feeds_store',
                        'ordering': ['name'],
                        'permissions': [('run_jobs', "Can run a store's pull or dispatch now")],
                    },
                ),
                migrations.CreateModel(
                    name='VtexRateLimit',
                    fields=[
                        ('account_key', models.CharField(max_length=300, primary_key=True, serialize=False)),
                        ('tokens', models.FloatField(default=0.0)),
                        ('refilled_at', models.DateTimeField(help_text="The tokens were counted up to this time (the database's clock)")),
                        ('paused_until', models.DateTimeField(blank=True, help_text='VTEX answered 429: no call before this', null=True)),
                    ],
                    options={
                        'db_table': 'feeds_vtexratelimit',
                    },
                ),
                migrations.CreateModel(
                    name='CallCount',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('system', models.CharField(max_length=10)),
                        ('store', models.CharField(max_length=64)),
                        ('operation', models.CharField(max_length=30)),
                        ('status', models.CharField(max_length=10)),
                        ('count', models.BigIntegerField(default=0)),
                        ('duration_ms_sum', models.BigIntegerField(default=0)),
                        ('le_50ms', models.BigIntegerField(default=0)),
                        ('le_100ms', models.BigIntegerField(default=0)),
                        ('le_250ms', models.BigIntegerField(default=0)),
                        ('le_500ms', models.BigIntegerField(default=0)),
                        ('le_1000ms', models.BigIntegerField(default=0)),
                        ('le_2500ms', models.BigIntegerField(default=0)),
                        ('le_5000ms', models.BigIntegerField(default=0)),
                        ('le_10000ms', models.BigIntegerField(default=0)),
                        ('le_20000ms', models.BigIntegerField(default=0)),
                    ],
                    options={
                        'db_table': 'feeds_callcount',
                        'constraints': [models.UniqueConstraint(fields=('system', 'store', 'operation', 'status'), name='call_count_unique')],
                    },
                ),
                migrations.CreateModel(
                    name='ErpConnection',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('url', models.URLField()),
                        ('headers', integrationhub.crypto.EncryptedJSONField(blank=True, default=dict)),
                        ('timeout_seconds', models.FloatField(default=20.0)),
                        ('connector', models.CharField(default='orders.erp.HttpErpConnector', max_length=200)),
                        ('breaker_failures', models.PositiveIntegerField(default=0)),
                        ('breaker_open_until', models.DateTimeField(blank=True, null=True)),
                        ('store', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='erp', to='core.store')),
                    ],
                    options={
                        'db_table': 'feeds_erpconnection',
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_core, content_types_to_feeds),
    ]
