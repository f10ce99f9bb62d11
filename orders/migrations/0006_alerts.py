# Alert channels and the alert history (issue 8).

import django.db.models.deletion
import integrationhub.crypto
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('feeds', '0002_alter_store_options'),  # Store; no later feeds change is needed
        ('orders', '0005_manage_jobs_permission'),
    ]

    operations = [
        migrations.CreateModel(
            name='AlertChannel',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('email', 'E-mail'), ('webhook', 'Webhook')], max_length=10)),
                ('target', integrationhub.crypto.EncryptedTextField(help_text="An e-mail address, or the webhook's URL")),
                ('enabled', models.BooleanField(default=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('store', models.ForeignKey(blank=True, help_text='Empty: alerts of every store', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='alert_channels', to='feeds.store')),
            ],
            options={
                'ordering': ['store__name', 'kind', 'pk'],
            },
        ),
        migrations.CreateModel(
            name='Alert',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('retention', "Feed events near VTEX's retention"), ('jobs', 'Jobs late, down or blocked'), ('needs_attention', 'Needs-attention orders growing'), ('erp_failing', 'ERP failing')], max_length=20)),
                ('severity', models.CharField(choices=[('warning', 'Warning'), ('critical', 'Critical')], max_length=10)),
                ('message', models.TextField(help_text="The hub's own words: never an ERP or VTEX answer")),
                ('state', models.CharField(choices=[('firing', 'Firing'), ('resolved', 'Resolved')], default='firing', max_length=10)),
                ('first_at', models.DateTimeField()),
                ('last_sent_at', models.DateTimeField(blank=True, help_text='Last message delivered to a channel', null=True)),
                ('resolved_at', models.DateTimeField(blank=True, null=True)),
                ('deliveries', models.PositiveIntegerField(default=0, help_text='Messages delivered, over every channel')),
                ('last_delivery_error', models.TextField(blank=True)),
                ('store', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='alerts', to='feeds.store')),
            ],
            options={
                'ordering': ['-first_at', '-pk'],
                'indexes': [models.Index(fields=['state'], name='alert_state')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('state', 'firing')), fields=('store', 'kind'), name='alert_one_firing')],
            },
        ),
    ]
